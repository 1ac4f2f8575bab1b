//! `auto` falls back to epoll, with one warning, when io_uring is really unavailable:
//! the test re-runs itself in a child process under a seccomp filter that makes
//! `io_uring_setup` fail with EPERM, as Docker's default seccomp profile does.

use std::os::unix::process::CommandExt;
use std::process::Command;

use bytes::{Bytes, BytesMut};
use rafthttp::io::{block_on, choose_backend, Backend, Conn, IoError, IoMode, IoTask, Listener};

/// Makes `io_uring_setup` return EPERM for this process and its children.
fn deny_io_uring() -> std::io::Result<()> {
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // if A == io_uring_setup: fall through to ERRNO, else skip to ALLOW
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: plain prctl calls with valid arguments; `prog` and `filter` outlive them
    // (the kernel copies the filter). Both calls are async-signal-safe, as pre_exec needs.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

struct Ping;
impl IoTask for Ping {
    type Output = usize;
    async fn run<B: Backend>(self) -> usize {
        let l = B::bind("127.0.0.1:0".parse().unwrap(), &Default::default()).unwrap();
        let addr = l.local_addr().unwrap();
        tokio::task::spawn_local(async move {
            let (c, _) = l.accept().await.unwrap();
            let (r, _) = c.write_all(Bytes::from_static(b"pong")).await;
            r.unwrap();
        });
        let c = B::connect(addr, &Default::default()).await.unwrap();
        let (r, _) = c.read(BytesMut::with_capacity(16)).await;
        r.unwrap()
    }
}

/// Runs in the child, under the filter: not a test of its own unless asked for.
#[test]
fn child_under_seccomp() {
    if std::env::var("RAFTHTTP_FALLBACK_CHILD").is_err() {
        return;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    assert!(matches!(
        choose_backend(IoMode::Uring),
        Err(IoError::UringUnavailable(_))
    ));
    let backend = choose_backend(IoMode::Auto).unwrap();
    println!("BACKEND={backend}");
    println!("PING={}", block_on(backend, Ping).unwrap());
}

#[test]
fn auto_falls_back_to_epoll_with_one_warning_when_io_uring_is_denied() {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "child_under_seccomp",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("RAFTHTTP_FALLBACK_CHILD", "1")
    .env_remove("RAFTHTTP_IO");
    // SAFETY: the closure runs between fork and exec and only makes prctl calls.
    unsafe {
        cmd.pre_exec(deny_io_uring);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("BACKEND=epoll"), "{stdout}");
    assert!(stdout.contains("PING=4"), "{stdout}");
    assert_eq!(
        stderr.matches("falling back to epoll").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("EPERM"), "{stderr}");
}
