use super::queue::parse_cpu_list;
use super::*;

#[test]
fn cpu_lists() {
    assert_eq!(parse_cpu_list("0"), Some(1));
    assert_eq!(parse_cpu_list("0-1"), Some(2));
    assert_eq!(parse_cpu_list("0-3,5,7-8"), Some(7));
    assert_eq!(parse_cpu_list("3-1"), None);
    assert_eq!(parse_cpu_list("x"), None);
}

#[test]
fn transports_parse() {
    assert_eq!("auto".parse(), Ok(FuseTransport::Auto));
    assert_eq!("uring".parse(), Ok(FuseTransport::Uring));
    assert_eq!("dev".parse(), Ok(FuseTransport::Dev));
    assert!("tcp".parse::<FuseTransport>().unwrap_err().contains("tcp"));
}

#[test]
fn payload_covers_the_largest_request() {
    assert_eq!(payload_size(16 << 20, 128 << 10), 16 << 20);
    assert_eq!(payload_size(4096, 4096), 64 << 10);
    assert!(payload_size(1 << 20, 3 << 20) >= 3 << 20);
}
