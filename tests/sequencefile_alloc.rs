//! Lengths that lie never turn into large allocations: this test binary
//! counts the largest single allocation while the reader parses small
//! inputs that claim records, sections and decompressed sizes of up to a GiB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sequinsfs::format::sequencefile::{Codec, Compression, Reader, Writer, WriterOptions};

struct Tracking;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator; it only
// records the largest requested size.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

fn file(compression: Compression, codec: Codec) -> Vec<u8> {
    let mut options = WriterOptions::bytes_writable().compressed(compression, codec);
    options.sync = Some([3; 16]);
    let mut writer = Writer::new(Vec::new(), options).unwrap();
    writer.append_bytes_writable(b"key", b"value").unwrap();
    writer.finish().unwrap()
}

/// Reads until the error each case must produce.
fn read_to_error(bytes: &[u8]) {
    let Ok(mut reader) = Reader::new(bytes, "lies.seq") else {
        return;
    };
    loop {
        match reader.next_raw() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("a lying length was accepted"),
            Err(_) => return,
        }
    }
}

#[test]
fn lying_lengths_allocate_no_more_than_the_input_window() {
    let mut cases = Vec::new();
    // A record length of ~1 GiB on a NONE file.
    let none = file(Compression::None, Codec::Default);
    let start = Reader::new(&none[..], "x").unwrap().position() as usize;
    let mut c = none.clone();
    c[start..start + 4].copy_from_slice(&0x3fff_fff0i32.to_be_bytes());
    cases.push(c);
    // A BLOCK key-lengths section claiming ~1 GiB.
    let block = file(Compression::Block, Codec::Snappy);
    let mut c = block[..start + 21].to_vec();
    c.extend_from_slice(&[0x8c, 0x3f, 0xff, 0xff, 0xf0]);
    c.extend_from_slice(&block[start + 22..]);
    cases.push(c);
    // A Hadoop-framed Snappy value whose outer block and chunk claim ~1 GiB.
    let record = file(Compression::Record, Codec::Snappy);
    let value_at = start + 8 + 7;
    let mut c = record.clone();
    c[value_at..value_at + 4].copy_from_slice(&0x3fff_fff0u32.to_be_bytes());
    cases.push(c);
    // Metadata count of i32::MAX.
    let mut c = none[..start - 20].to_vec();
    c.extend_from_slice(&i32::MAX.to_be_bytes());
    cases.push(c);

    LARGEST.store(0, Ordering::Relaxed);
    for case in &cases {
        read_to_error(case);
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    // The reader's 1 MiB input window is the largest thing it may allocate.
    assert!(largest <= 1 << 21, "largest allocation {largest} bytes");
}
