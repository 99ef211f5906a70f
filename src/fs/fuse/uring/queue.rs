//! The per-CPU ring queues: one thread per possible CPU, pinned to it, each
//! with its own io_uring (SQE128) and a few ring entries (a header buffer
//! and a payload buffer each) registered with the kernel for queue `qid` =
//! that CPU. The kernel puts a request on the queue of the CPU its caller
//! runs on, so the request and its reply never leave that CPU.
//!
//! Lifecycle, arranged so that a mount never hangs waiting for queues that
//! will not come: the threads and their rings are set up *before* the mount
//! (an io_uring that cannot be created means FUSE_OVER_IO_URING is never
//! advertised); once INIT has negotiated it, the threads register their
//! entries (FUSE_IO_URING_CMD_REGISTER) and serve until the connection ends,
//! answering each request with FUSE_IO_URING_CMD_COMMIT_AND_FETCH, which
//! also hands the entry back for the next one. The kernel ends every entry
//! with ENOTCONN when the file system is unmounted, which ends the thread.
//! If a registration fails the kernel itself falls back to /dev/fuse.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use io_uring::{IoUring, cqueue, opcode as ring_op, squeue, types};

use super::abi::{self, Fields, InHeader};
use super::dispatch::Dispatcher;

/// Ring entries per queue. One thread answers a queue, so more entries do
/// not add parallelism; they let the kernel hand over a burst (readahead)
/// without waiting for each commit.
pub(crate) const DEFAULT_DEPTH: usize = 4;

/// Largest request arguments copied out of the payload before the reply
/// overwrites it: names (at most a page). Only WRITE and SETXATTR carry
/// more, and both are refused without looking at them.
const MAX_ARGS: usize = 64 * 1024;

enum Start {
    Serve {
        fd: Arc<OwnedFd>,
        dispatcher: Arc<Dispatcher>,
        payload: usize,
    },
    Stop,
}

/// The queue threads of one mount.
pub(crate) struct Queues {
    threads: Vec<JoinHandle<()>>,
    starts: Vec<mpsc::Sender<Start>>,
    served: Arc<AtomicU64>,
}

impl Queues {
    /// Starts one thread per possible CPU and waits until each has its
    /// ring. Fails (and leaves nothing running) if any cannot have one.
    pub(crate) fn prepare(depth: usize) -> io::Result<Queues> {
        let cpus = possible_cpus()?;
        let served = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut queues = Queues {
            threads: Vec::with_capacity(cpus),
            starts: Vec::with_capacity(cpus),
            served: Arc::clone(&served),
        };
        for qid in 0..cpus {
            let (start_tx, start_rx) = mpsc::channel();
            let ready = ready_tx.clone();
            let served = Arc::clone(&served);
            let thread = std::thread::Builder::new()
                .name(format!("sequinsfs-uring-{qid}"))
                .spawn(move || queue_thread(qid, depth, &ready, &start_rx, &served));
            match thread {
                Ok(thread) => {
                    queues.threads.push(thread);
                    queues.starts.push(start_tx);
                }
                Err(err) => {
                    queues.stop();
                    return Err(err);
                }
            }
        }
        drop(ready_tx);
        for _ in 0..cpus {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    queues.stop();
                    return Err(err);
                }
                Err(_) => {
                    queues.stop();
                    return Err(io::Error::other("an io_uring queue thread ended early"));
                }
            }
        }
        Ok(queues)
    }

    /// Number of queues (possible CPUs).
    pub(crate) fn len(&self) -> usize {
        self.threads.len()
    }

    /// Registers every queue's entries on the connection behind `fd` and
    /// serves requests with `dispatcher`. `payload` is each entry's payload
    /// buffer size (at least the kernel's largest request or reply).
    pub(crate) fn serve(&mut self, fd: OwnedFd, dispatcher: Arc<Dispatcher>, payload: usize) {
        let fd = Arc::new(fd);
        for start in self.starts.drain(..) {
            let _ = start.send(Start::Serve {
                fd: Arc::clone(&fd),
                dispatcher: Arc::clone(&dispatcher),
                payload,
            });
        }
    }

    /// Requests answered over the rings so far.
    pub(crate) fn served(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.served)
    }

    /// Ends threads that were never told to serve, and waits for all of
    /// them (serving ones end when the connection does).
    pub(crate) fn stop(&mut self) {
        for start in self.starts.drain(..) {
            let _ = start.send(Start::Stop);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    /// Lets serving threads run on by themselves (a lazily detached mount
    /// lives until its last user is done).
    pub(crate) fn detach(&mut self) {
        for start in self.starts.drain(..) {
            let _ = start.send(Start::Stop);
        }
        self.threads.clear();
    }
}

impl Drop for Queues {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The CPUs the kernel may ever run a caller on (`num_possible_cpus()`,
/// which is how many queues it expects, numbered by CPU).
fn possible_cpus() -> io::Result<usize> {
    let path = "/sys/devices/system/cpu/possible";
    let text = std::fs::read_to_string(path)?;
    parse_cpu_list(text.trim()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: cannot parse CPU list {:?}", text.trim()),
        )
    })
}

/// Counts the CPUs of a list like `0-3,5`.
pub(crate) fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut count = 0usize;
    for part in list.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let cpu = part.parse::<usize>().ok()?;
                (cpu, cpu)
            }
        };
        count = count.checked_add(last.checked_sub(first)? + 1)?;
    }
    (count > 0).then_some(count)
}

fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain bits; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit of `set`; it checks `cpu` against the
    // set's size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed, alive for the
    // call; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

type Ring = IoUring<squeue::Entry128, cqueue::Entry>;

fn build_ring(depth: usize) -> io::Result<Ring> {
    let entries = (depth as u32).next_power_of_two();
    // Task work (copying a request into our buffers) runs when this thread
    // waits for completions, not by interrupting it: one issuer per ring.
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries)
        .or_else(|_| IoUring::builder().build(entries))
}

fn queue_thread(
    qid: usize,
    depth: usize,
    ready: &mpsc::Sender<io::Result<()>>,
    start: &mpsc::Receiver<Start>,
    served: &AtomicU64,
) {
    if let Err(err) = pin_to_cpu(qid) {
        // An offline CPU: its queue still has to exist for the kernel.
        tracing::debug!(qid, "cannot pin io_uring queue thread: {err}");
    }
    let ring = match build_ring(depth) {
        Ok(ring) => {
            let _ = ready.send(Ok(()));
            ring
        }
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let Ok(Start::Serve {
        fd,
        dispatcher,
        payload,
    }) = start.recv()
    else {
        return;
    };
    match serve(ring, qid, depth, &fd, &dispatcher, payload, served) {
        Ok(()) => tracing::debug!(qid, "io_uring queue ended with the connection"),
        Err(err) => tracing::warn!(qid, "io_uring queue failed: {err}"),
    }
}

/// One ring entry's buffers. The kernel writes a request into them and
/// reads the reply out of them only between our REGISTER/COMMIT and the
/// completion that hands the entry back, never while we look at them.
struct RingEntry {
    header: Box<[u8]>,
    payload: Box<[u8]>,
    iov: Box<[libc::iovec; 2]>,
}

impl RingEntry {
    fn new(payload: usize) -> RingEntry {
        let mut header = vec![0u8; abi::RING_HEADER_LEN].into_boxed_slice();
        let mut payload = vec![0u8; payload].into_boxed_slice();
        let iov = Box::new([
            libc::iovec {
                iov_base: header.as_mut_ptr().cast(),
                iov_len: header.len(),
            },
            libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload.len(),
            },
        ]);
        RingEntry {
            header,
            payload,
            iov,
        }
    }
}

/// `fuse_uring_cmd_req` in the SQE's 80-byte command area.
fn command(commit_id: u64, qid: usize) -> [u8; 80] {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&(qid as u16).to_ne_bytes());
    cmd
}

fn serve(
    mut ring: Ring,
    qid: usize,
    depth: usize,
    fd: &OwnedFd,
    dispatcher: &Dispatcher,
    payload: usize,
    served: &AtomicU64,
) -> io::Result<()> {
    let fd = types::Fd(fd.as_raw_fd());
    let mut entries: Vec<RingEntry> = (0..depth).map(|_| RingEntry::new(payload)).collect();
    for (index, entry) in entries.iter().enumerate() {
        let sqe = ring_op::UringCmd80::new(fd, abi::URING_CMD_REGISTER)
            .cmd(command(0, qid))
            .addr(Some(entry.iov.as_ptr() as u64))
            .build()
            .user_data(index as u64);
        // The iovec's length field is the count for this command.
        let sqe = with_len(sqe, 2);
        // SAFETY: the iovecs and the buffers they point to live in
        // `entries`, which outlives the ring's use of them: this function
        // keeps them until every entry has completed with an error (the
        // kernel has let go of it) or the ring is dropped first, below.
        unsafe { ring.submission().push(&sqe) }.map_err(io::Error::other)?;
    }
    let mut live = depth;
    let mut done: Vec<(usize, i32)> = Vec::with_capacity(depth);
    let mut args: Vec<u8> = Vec::new();
    let mut failed = None;
    let result = loop {
        if live == 0 {
            break Ok(());
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(err) if err.raw_os_error() == Some(libc::EINTR) => continue,
            Err(err) => break Err(err),
        }
        done.clear();
        done.extend(
            ring.completion()
                .map(|cqe| (cqe.user_data() as usize, cqe.result())),
        );
        for &(index, result) in &done {
            if result < 0 {
                live -= 1;
                let err = io::Error::from_raw_os_error(-result);
                match -result {
                    libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED | libc::ENODEV => {
                        tracing::trace!(qid, "io_uring entry ended: {err}")
                    }
                    _ => tracing::warn!(qid, "io_uring entry failed: {err}"),
                }
                continue;
            }
            let Some(entry) = entries.get_mut(index) else {
                continue;
            };
            let commit_id = answer(entry, dispatcher, &mut args);
            served.fetch_add(1, Ordering::Relaxed);
            let sqe = ring_op::UringCmd80::new(fd, abi::URING_CMD_COMMIT_AND_FETCH)
                .cmd(command(commit_id, qid))
                .build()
                .user_data(index as u64);
            // SAFETY: as for REGISTER above; the entry's buffers stay where
            // they were registered.
            if let Err(err) = unsafe { ring.submission().push(&sqe) } {
                failed = Some(io::Error::other(err));
                break;
            }
        }
        if let Some(err) = failed.take() {
            break Err(err);
        }
    };
    // Dropping the ring cancels whatever the kernel still holds. Buffers
    // of entries the kernel has not handed back are leaked rather than
    // freed under it (only after an unexpected ring error).
    drop(ring);
    if live > 0 {
        std::mem::forget(entries);
    }
    result
}

/// Sets the SQE's `len` field (the iovec count of a REGISTER), which the
/// crate's UringCmd80 builder leaves at zero.
fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    let mut raw = sqe_bytes(&sqe);
    // `len` is at byte 24 of `struct io_uring_sqe`.
    raw[24..28].copy_from_slice(&len.to_ne_bytes());
    sqe_from_bytes(raw)
}

fn sqe_bytes(sqe: &squeue::Entry128) -> [u8; 128] {
    // SAFETY: Entry128 is `repr(C)`, 128 bytes of plain integers (an SQE
    // and its 64-byte extension), so reading it as bytes is sound.
    unsafe { std::mem::transmute_copy::<squeue::Entry128, [u8; 128]>(sqe) }
}

fn sqe_from_bytes(raw: [u8; 128]) -> squeue::Entry128 {
    const _: () = assert!(size_of::<squeue::Entry128>() == 128);
    // SAFETY: every bit pattern is a valid Entry128 (plain integers and
    // unions of them), and the size matches (checked above).
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

/// Answers the request in `entry` in place and returns its commit ID.
fn answer(entry: &mut RingEntry, dispatcher: &Dispatcher, args: &mut Vec<u8>) -> u64 {
    let ring_in_out = Fields::new(
        &entry.header[abi::RING_ENT_IN_OUT_OFFSET..abi::RING_HEADER_LEN],
        0,
    );
    let commit_id = ring_in_out.u64(8, "commit id").unwrap_or(0);
    let payload_sz = ring_in_out.u32(16, "payload size").unwrap_or(0) as usize;
    let header = InHeader::parse(&entry.header[..abi::IN_HEADER_LEN]);
    let mut op_in = [0u8; abi::RING_OP_IN_LEN];
    op_in.copy_from_slice(
        &entry.header[abi::RING_OP_IN_OFFSET..abi::RING_OP_IN_OFFSET + abi::RING_OP_IN_LEN],
    );
    args.clear();
    if payload_sz <= MAX_ARGS {
        // The reply is written over the arguments: copy them out first.
        args.extend_from_slice(&entry.payload[..payload_sz.min(entry.payload.len())]);
    }
    let (unique, reply) = match header {
        Ok(header) => (
            header.unique,
            dispatcher.handle(&header, &op_in, args, &mut entry.payload),
        ),
        Err(malformed) => {
            tracing::warn!("{malformed}");
            (commit_id, Err(libc::EIO))
        }
    };
    let (len, error) = match reply {
        Ok(len) => (len, 0),
        Err(errno) => (0, -errno),
    };
    entry.header[..abi::OUT_HEADER_LEN].copy_from_slice(&abi::out_header(
        (abi::OUT_HEADER_LEN + len) as u32,
        error,
        unique,
    ));
    let size_at = abi::RING_ENT_IN_OUT_OFFSET + 16;
    entry.header[size_at..size_at + 4].copy_from_slice(&(len as u32).to_ne_bytes());
    commit_id
}
