//! The `mount` command as users run it: it daemonizes, returns once the
//! mount serves the data, serves HTTP beside it with `--http`, and unmounts
//! and exits on SIGTERM.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sequinsfs")
}

/// Runs a command to completion, failing the test if it hangs.
fn run_bounded(cmd: &mut Command) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("command returned")
        .unwrap()
}

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let path = path.to_str().unwrap();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(path))
}

#[test]
fn mount_daemonizes_serves_and_stops_on_sigterm() {
    if !common::can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let port = common::free_port();
    let out = mount_demo(dir.path(), port, &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("mounted at"));
    // The data is there as soon as the command returned.
    assert_eq!(
        std::fs::read(mnt.join("baby-names/1881/boy")).unwrap(),
        b"John"
    );
    assert_eq!(std::fs::read(mnt.join("colors/red")).unwrap(), b"#ff0000");
    let mut conn = common::Conn::connect(([127, 0, 0, 1], port).into());
    let reply = conn.request("GET", "/baby-names/1881/girl", &[]).unwrap();
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"Mary"[..]));

    stop_daemon(&mnt);
    let still_mounted = is_mounted(&mnt);
    assert!(!still_mounted, "unmounted on SIGTERM");
    // Without --log-file the daemon logged into its local store.
    let log = std::fs::read_to_string(dir.path().join("store/sequinsfs.log")).unwrap();
    assert!(log.contains("mounted"), "{log}");
}

/// With `--idle-poll` the daemon holds the kernel's CPU latency request at
/// 0 µs while requests arrive, through the mount or over HTTP, and gives it
/// back once they stop.
#[test]
fn idle_poll_holds_the_cpu_latency_request_while_requests_arrive() {
    if !common::can_mount() {
        return;
    }
    let Some(quiet_limit) = kernel_latency_limit() else {
        eprintln!("skipped: no /dev/cpu_dma_latency");
        return;
    };
    if quiet_limit == 0 {
        eprintln!("skipped: another process holds /dev/cpu_dma_latency at 0");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let port = common::free_port();
    mount_demo(dir.path(), port, &["--idle-poll"]);
    // The startup reads may have taken it already: wait for a quiet spell.
    await_kernel_limit(quiet_limit);

    assert_eq!(std::fs::read(mnt.join("colors/red")).unwrap(), b"#ff0000");
    await_kernel_limit(0);
    await_kernel_limit(quiet_limit);

    let mut conn = common::Conn::connect(([127, 0, 0, 1], port).into());
    let reply = conn.request("GET", "/colors/red", &[]).unwrap();
    assert_eq!(reply.status, 200);
    await_kernel_limit(0);
    await_kernel_limit(quiet_limit);

    // Taken once for the read through the mount and once for HTTP (at
    // least: the startup reads may have taken it too).
    let samples = common::scrape(&mut conn);
    let takes = common::sample(&samples, "sequinsfs_idle_poll_takes_total", &[]);
    assert!(takes >= Some(2.0), "{samples:?}");
    assert!(common::sample(&samples, "sequinsfs_idle_poll_holding", &[]).is_some());

    stop_daemon(&mnt);
    assert_eq!(kernel_latency_limit(), Some(quiet_limit));
}

/// Writes the demo source root under `dir` and mounts it at `dir/mnt` as a
/// daemon with its store in `dir/store`, HTTP on `port` and `extra` flags;
/// returns the command's output once it succeeded.
fn mount_demo(dir: &Path, port: u16, extra: &[&str]) -> std::process::Output {
    // The fuse module's `enable_uring` is the machine's: only the tests
    // that hold URING_PARAM let a daemon turn it on.
    mount_demo_with(dir, port, &[extra, &["--leave-kernel-uring"]].concat())
}

/// [`mount_demo`] with exactly the arguments `extra`.
fn mount_demo_with(dir: &Path, port: u16, extra: &[&str]) -> std::process::Output {
    let source = dir.join("source");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = run_bounded(Command::new(bin()).arg("demo-data").arg(&source));
    assert!(out.status.success());
    let out = run_bounded(
        Command::new(bin())
            .arg("mount")
            .arg(&source)
            .arg(&mnt)
            .arg("--local-store")
            .arg(dir.join("store"))
            .arg("--http")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `fusermount3 -u` is a documented way to stop: the daemon exits quietly,
/// with no warning in its log.
#[test]
fn an_unmount_from_outside_is_a_quiet_shutdown() {
    if !common::can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let log = dir.path().join("daemon.log");
    mount_demo(
        dir.path(),
        common::free_port(),
        &["--log-file", log.to_str().unwrap()],
    );
    wait_for_daemon_exit(&mnt, || {
        let out = run_bounded(Command::new("fusermount3").arg("-u").arg(&mnt));
        assert!(out.status.success());
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("was unmounted from outside"), "{text}");
    assert!(!text.contains(" WARN "), "{text}");
    assert!(!text.contains("ERROR"), "{text}");
}

/// `mount --config FILE MOUNTPOINT`: the source comes from the config file.
#[test]
fn mount_takes_the_source_from_the_config_file() {
    if !common::can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = run_bounded(Command::new(bin()).arg("demo-data").arg(&source));
    assert!(out.status.success());
    let config = dir.path().join("sequins.conf");
    std::fs::write(
        &config,
        format!(
            "source = {:?}\nlocal_store = {:?}\n",
            source.display().to_string(),
            dir.path().join("store").display().to_string()
        ),
    )
    .unwrap();
    let out = run_bounded(
        Command::new(bin())
            .arg("mount")
            .arg("--leave-kernel-uring")
            .arg("--config")
            .arg(&config)
            .arg(&mnt),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "sequinsfs: {} mounted at {}\n",
            source.display(),
            mnt.display()
        )
    );
    assert_eq!(std::fs::read(mnt.join("colors/red")).unwrap(), b"#ff0000");
    stop_daemon(&mnt);
}

/// SIGTERM to the daemon during a long first load stops it at once; the
/// `mount` command reports it and exits 1, nothing mounted.
#[test]
fn sigterm_during_the_first_load_stops_the_mount() {
    if !common::can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..5_000)
        .map(|i| (format!("k{i}").into_bytes(), b"v".to_vec()))
        .collect();
    common::data::write_seqfile_version(&source, "slow", "1", &[pairs]);
    let config = dir.path().join("sequins.conf");
    // 5,000 records at 20 ms each: a first load of 100 s.
    std::fs::write(&config, "throttle_loads = \"20ms\"\n").unwrap();
    let log = dir.path().join("daemon.log");
    let parent = Command::new(bin())
        .arg("mount")
        .arg("--leave-kernel-uring")
        .arg(&source)
        .arg(&mnt)
        .arg("--config")
        .arg(&config)
        .arg("--local-store")
        .arg(dir.path().join("store"))
        .arg("--log-file")
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains("loading version")) {
        assert!(std::time::Instant::now() < deadline, "no load started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The daemon is the `mount` command's child (the command waits for it).
    let daemon = child_of(parent.id()).expect("daemon running");
    let started = std::time::Instant::now();
    // SAFETY: kill sends a signal to the daemon this test started.
    assert_eq!(unsafe { libc::kill(daemon, libc::SIGTERM) }, 0);
    let out = parent.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "sequinsfs: stopped by SIGTERM while loading\n"
    );
    assert!(!is_mounted(&mnt));
}

/// A mount point with files in it is refused unless `--nonempty`.
#[test]
fn a_nonempty_mount_point_needs_nonempty() {
    if !common::can_mount() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::write(mnt.join("notes.txt"), b"mine").unwrap();
    let source = dir.path().join("source");
    let out = run_bounded(Command::new(bin()).arg("demo-data").arg(&source));
    assert!(out.status.success());
    let mount = |extra: &[&str]| {
        run_bounded(
            Command::new(bin())
                .arg("mount")
                .arg("--leave-kernel-uring")
                .arg(&source)
                .arg(&mnt)
                .arg("--local-store")
                .arg(dir.path().join("store"))
                .args(extra),
        )
    };
    let out = mount(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "sequinsfs: mount point {} is not empty (its files would be hidden; --nonempty mounts over them)\n",
            mnt.display()
        )
    );
    assert!(
        !dir.path().join("store").exists(),
        "created the local store"
    );
    assert!(!is_mounted(&mnt));
    let out = mount(&["--nonempty"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(mnt.join("colors/red")).unwrap(), b"#ff0000");
    stop_daemon(&mnt);
    assert_eq!(std::fs::read(mnt.join("notes.txt")).unwrap(), b"mine");
}

/// The kernel's current CPU latency limit in µs (its default, 2000 s, means
/// none), or `None` without the device.
fn kernel_latency_limit() -> Option<i32> {
    use std::io::Read;
    // Opening it adds a request of "no limit", which changes nothing.
    let mut file = std::fs::File::open("/dev/cpu_dma_latency").ok()?;
    let mut value = [0u8; 4];
    file.read_exact(&mut value).ok()?;
    Some(i32::from_ne_bytes(value))
}

/// Waits (at most 30 s) until the kernel's limit is `expected`. The kernel
/// announces no change, so this looks every few milliseconds.
fn await_kernel_limit(expected: i32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = kernel_latency_limit();
        if now == Some(expected) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "CPU latency limit stayed {now:?}, expected {expected}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Finds the daemon serving `mnt` by its command line, sends it SIGTERM and
/// waits for it to exit.
fn stop_daemon(mnt: &Path) {
    wait_for_daemon_exit(mnt, || {
        let pid = find_daemon(mnt).expect("daemon running");
        // SAFETY: kill sends a signal to the daemon this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    });
}

/// Runs `stop` and waits until the daemon serving `mnt` has exited.
fn wait_for_daemon_exit(mnt: &Path, stop: impl FnOnce()) {
    let pid = find_daemon(mnt).expect("daemon running");
    // A pidfd turns the daemon's exit into an event we can wait for.
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    assert!(
        pidfd >= 0,
        "pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    stop();
    let mut poll = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; waits at most a minute.
    let ready = unsafe { libc::poll(&mut poll, 1, 60_000) };
    assert_eq!(ready, 1, "daemon exited");
    // SAFETY: closing the fd pidfd_open gave us.
    unsafe { libc::close(pidfd) };
}

/// A process whose parent is `parent`.
fn child_of(parent: u32) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()? {
        let entry = entry.ok()?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command name, in parentheses: state, then the parent.
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            return Some(pid);
        }
    }
    None
}

fn find_daemon(mnt: &Path) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()? {
        let entry = entry.ok()?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.contains(&&b"mount"[..]) && args.contains(&mnt.as_os_str().as_encoded_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// The tests that depend on the fuse module's `enable_uring` parameter.
static URING_PARAM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The parameter, held for one test; `None` (the test skips, printing why)
/// where there is no mount or no FUSE over io_uring.
fn hold_uring_param() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !common::can_mount() {
        return None;
    }
    if !Path::new(sequinsfs::fs::fuse::uring::ENABLE_URING_PARAM).exists() {
        eprintln!("skipped: this kernel has no FUSE over io_uring");
        return None;
    }
    Some(URING_PARAM.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Mounts the demo with `args` while the fuse module allows io_uring (set
/// for the mount and restored), reads `files` (path, contents), stops it,
/// and checks that it served over io_uring. Skips (printing why) where
/// there is no mount or no FUSE over io_uring.
fn assert_demo_served_over_io_uring(args: &[&str], files: &[(&str, &[u8])]) {
    let Some(_serial) = hold_uring_param() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let port = common::free_port();
    let param = common::EnableUring::new();
    mount_demo(dir.path(), port, args);
    drop(param);
    for (path, contents) in files {
        assert_eq!(std::fs::read(mnt.join(path)).unwrap(), *contents, "{path}");
    }
    stop_daemon(&mnt);
    assert!(!is_mounted(&mnt), "unmounted on SIGTERM");
    let log = std::fs::read_to_string(dir.path().join("store/sequinsfs.log")).unwrap();
    assert!(log.contains("serving FUSE requests over io_uring"), "{log}");
}

/// `--fuse-transport uring` serves the mount over io_uring when the kernel
/// allows it.
#[test]
fn mount_serves_over_io_uring_when_asked() {
    assert_demo_served_over_io_uring(
        &["--fuse-transport", "uring"],
        &[("baby-names/1881/boy", b"John"), ("colors/red", b"#ff0000")],
    );
}

/// Without `--fuse-transport`, a standalone mount uses io_uring where the
/// kernel allows it (`auto` is the default).
#[test]
fn a_standalone_mount_uses_io_uring_by_default_where_the_kernel_allows_it() {
    assert_demo_served_over_io_uring(&[], &[("colors/red", b"#ff0000")]);
}

/// By default a standalone mount turns on the kernel's `enable_uring` if it
/// is off, says so in its log, and serves over io_uring.
#[test]
fn a_standalone_mount_turns_io_uring_on_in_the_kernel() {
    let Some(_serial) = hold_uring_param() else {
        return;
    };
    let param = sequinsfs::fs::fuse::uring::ENABLE_URING_PARAM;
    let _restore = common::EnableUring::set("N");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    mount_demo_with(dir.path(), common::free_port(), &[]);
    assert_eq!(std::fs::read_to_string(param).unwrap().trim(), "Y");
    assert_eq!(std::fs::read(mnt.join("colors/red")).unwrap(), b"#ff0000");
    stop_daemon(&mnt);
    let log = std::fs::read_to_string(dir.path().join("store/sequinsfs.log")).unwrap();
    assert!(
        log.contains("turned on FUSE over io_uring in the kernel"),
        "{log}"
    );
    assert!(log.contains("serving FUSE requests over io_uring"), "{log}");
}

/// With `--leave-kernel-uring` and the kernel's permission off, `--fuse-transport
/// uring` is a one-line error naming the parameter, `auto` mounts over
/// /dev/fuse, and the parameter stays off.
#[test]
fn fuse_transport_uring_without_the_kernel_is_a_clear_error() {
    let Some(_serial) = hold_uring_param() else {
        return;
    };
    let param = sequinsfs::fs::fuse::uring::ENABLE_URING_PARAM;
    let _restore = common::EnableUring::set("N");
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    assert!(
        run_bounded(Command::new(bin()).arg("demo-data").arg(&source))
            .status
            .success()
    );
    let out = run_bounded(
        Command::new(bin())
            .arg("mount")
            .arg(&source)
            .arg(&mnt)
            .arg("--local-store")
            .arg(dir.path().join("store"))
            .args(["--fuse-transport", "uring", "--leave-kernel-uring"]),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("enable_uring"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!is_mounted(&mnt));

    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let port = common::free_port();
    mount_demo(dir.path(), port, &["--fuse-transport", "auto"]);
    assert_eq!(std::fs::read(mnt.join("colors/red")).unwrap(), b"#ff0000");
    stop_daemon(&mnt);
    let log = std::fs::read_to_string(dir.path().join("store/sequinsfs.log")).unwrap();
    assert!(log.contains("using /dev/fuse"), "{log}");
    assert_eq!(std::fs::read_to_string(param).unwrap().trim(), "N");
}
