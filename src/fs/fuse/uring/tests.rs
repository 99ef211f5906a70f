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

mod dispatch {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use crate::catalog::{Catalog, InMemoryVersionData};
    use crate::fs::attr::{ATTR_TTL, CoreOptions};
    use crate::fs::core::FsCore;
    use crate::fs::counters::Op;
    use crate::fs::fuse::uring::abi::{self, Fields, InHeader, opcode};
    use crate::fs::fuse::uring::dispatch::Dispatcher;
    use crate::fs::inode;

    const OWNER: u32 = 1000;

    fn dispatcher(owner_only: Option<u32>) -> (Dispatcher, Arc<FsCore>) {
        let catalog = Catalog::new();
        let pairs = vec![
            (b"dir/key".to_vec(), b"nested".to_vec()),
            (b"key".to_vec(), b"value".to_vec()),
        ];
        let version = InMemoryVersionData::version("db", "1", SystemTime::UNIX_EPOCH, pairs);
        catalog.publish(version, "test".into(), Duration::from_secs(60));
        let options = CoreOptions {
            uid: OWNER,
            gid: OWNER,
        };
        let core = Arc::new(FsCore::new(catalog, || {}, options));
        (Dispatcher::new(Arc::clone(&core), None, owner_only), core)
    }

    fn header(opcode: u32, nodeid: u64) -> InHeader {
        InHeader {
            len: 0,
            opcode,
            unique: 7,
            nodeid,
            uid: OWNER,
            gid: OWNER,
            pid: 1,
        }
    }

    fn call(d: &Dispatcher, h: &InHeader, op_in: &[u8], args: &[u8]) -> Result<Vec<u8>, i32> {
        let mut out = vec![0u8; 64 * 1024];
        let len = d.handle(h, op_in, args, &mut out)?;
        out.truncate(len);
        Ok(out)
    }

    fn read_in(offset: u64, size: u32) -> Vec<u8> {
        let mut op_in = vec![0u8; 40];
        op_in[8..16].copy_from_slice(&offset.to_ne_bytes());
        op_in[16..20].copy_from_slice(&size.to_ne_bytes());
        op_in
    }

    /// LOOKUP of `name` under `parent`: the entry's node id.
    fn lookup(d: &Dispatcher, parent: u64, name: &str) -> u64 {
        let out = call(
            d,
            &header(opcode::LOOKUP, parent),
            &[],
            format!("{name}\0").as_bytes(),
        )
        .unwrap_or_else(|errno| panic!("lookup {name}: errno {errno}"));
        assert_eq!(out.len(), abi::ENTRY_OUT_LEN);
        Fields::new(&out, opcode::LOOKUP).u64(0, "nodeid").unwrap()
    }

    #[test]
    fn lookup_getattr_and_read_agree_with_the_core() {
        let (d, core) = dispatcher(None);
        let versions = lookup(&d, inode::ROOT, ".versions");
        assert_eq!(versions, inode::VERSIONS_DIR);
        let db = lookup(&d, versions, "db");
        let version = lookup(&d, db, "1");
        let key = lookup(&d, version, "key");
        let (attr, ttl) = core.getattr(key).unwrap();

        let out = call(&d, &header(opcode::GETATTR, key), &[0; 16], &[]).unwrap();
        assert_eq!(out.len(), abi::ATTR_OUT_LEN);
        let f = Fields::new(&out, opcode::GETATTR);
        assert_eq!(f.u64(0, "attr_valid").unwrap(), ttl.as_secs());
        assert_eq!(f.u64(16, "ino").unwrap(), key);
        assert_eq!(f.u64(24, "size").unwrap(), 5);
        assert_eq!(f.u64(32, "blocks").unwrap(), 1);
        assert_eq!(
            f.u32(16 + 60, "mode").unwrap(),
            libc::S_IFREG | u32::from(attr.perm)
        );
        assert_eq!(f.u32(16 + 64, "nlink").unwrap(), 1);
        assert_eq!(f.u32(16 + 68, "uid").unwrap(), OWNER);
        assert_eq!(f.u32(16 + 80, "blksize").unwrap(), 4096);

        let out = call(&d, &header(opcode::READ, key), &read_in(1, 3), &[]).unwrap();
        assert_eq!(out, b"alu");
        let out = call(&d, &header(opcode::READ, key), &read_in(100, 3), &[]).unwrap();
        assert!(out.is_empty());
        assert_eq!(core.counters().get(Op::Read), 2);
        assert_eq!(core.counters().get(Op::Lookup), 4);
    }

    #[test]
    fn a_missing_name_is_a_negative_entry_and_a_long_one_enametoolong() {
        let (d, _) = dispatcher(None);
        let version = lookup(&d, lookup(&d, inode::VERSIONS_DIR, "db"), "1");
        let out = call(&d, &header(opcode::LOOKUP, version), &[], b"nope\0").unwrap();
        let f = Fields::new(&out, opcode::LOOKUP);
        assert_eq!(f.u64(0, "nodeid").unwrap(), 0);
        assert!(f.u64(16, "entry_valid").unwrap() > 0);
        let long = format!("{}\0", "x".repeat(256));
        let err = call(&d, &header(opcode::LOOKUP, version), &[], long.as_bytes()).unwrap_err();
        assert_eq!(err, libc::ENAMETOOLONG);
        // A name without its NUL is malformed: EIO, not a panic.
        let err = call(&d, &header(opcode::LOOKUP, version), &[], b"key").unwrap_err();
        assert_eq!(err, libc::EIO);
        // So is a READ without its arguments.
        let err = call(&d, &header(opcode::READ, version), &[0; 12], &[]).unwrap_err();
        assert_eq!(err, libc::EIO);
    }

    #[test]
    fn readdirplus_fills_whole_entries_and_resumes() {
        let (d, core) = dispatcher(None);
        let version = lookup(&d, lookup(&d, inode::VERSIONS_DIR, "db"), "1");
        let mut names = Vec::new();
        let mut offset = 0;
        // Room for one entry per reply: every reply resumes where the last
        // one stopped.
        let size = abi::direntplus_len(b".version") as u32;
        loop {
            let out = call(
                &d,
                &header(opcode::READDIRPLUS, version),
                &read_in(offset, size),
                &[],
            )
            .unwrap();
            if out.is_empty() {
                break;
            }
            let f = Fields::new(&out, opcode::READDIRPLUS);
            let entry_valid = f.u64(16, "entry_valid").unwrap();
            let at = abi::ENTRY_OUT_LEN;
            offset = f.u64(at + 8, "off").unwrap();
            let namelen = f.u32(at + 16, "namelen").unwrap() as usize;
            let name = &out[at + abi::DIRENT_LEN..at + abi::DIRENT_LEN + namelen];
            assert_eq!(out.len(), abi::direntplus_len(name), "one entry per reply");
            names.push(String::from_utf8(name.to_vec()).unwrap());
            if name != b"." && name != b".." {
                assert_eq!(entry_valid, ATTR_TTL.as_secs().min(entry_valid));
            }
        }
        assert!(names.contains(&"key".to_string()), "{names:?}");
        assert!(names.contains(&"dir".to_string()), "{names:?}");
        assert!(names.contains(&".version".to_string()), "{names:?}");
        assert!(core.counters().get(Op::Readdirplus) >= 3);
    }

    #[test]
    fn opens_and_writes_answer_as_the_adapter_does() {
        let (d, _) = dispatcher(None);
        for (op, errno) in [
            (opcode::OPEN, libc::ENOSYS),
            (opcode::OPENDIR, libc::ENOSYS),
            (opcode::GETXATTR, libc::ENOSYS),
            (opcode::IOCTL, libc::ENOTTY),
            (opcode::WRITE, libc::EROFS),
            (opcode::MKDIR, libc::EROFS),
            (opcode::UNLINK, libc::EROFS),
            (opcode::RENAME2, libc::EROFS),
            (9999, libc::ENOSYS),
        ] {
            assert_eq!(
                call(&d, &header(op, inode::ROOT), &[], &[]),
                Err(errno),
                "opcode {op}"
            );
        }
        assert_eq!(
            call(&d, &header(opcode::FSYNC, inode::ROOT), &[], &[]),
            Ok(vec![])
        );
        // A time update of `.refresh` by the owner is the one allowed write.
        let mut setattr = vec![0u8; 88];
        setattr[0..4].copy_from_slice(&(abi::FATTR_ATIME | abi::FATTR_MTIME).to_ne_bytes());
        let out = call(
            &d,
            &header(opcode::SETATTR, inode::REFRESH_FILE),
            &setattr,
            &[],
        )
        .unwrap();
        assert_eq!(out.len(), abi::ATTR_OUT_LEN);
        setattr[0..4].copy_from_slice(&abi::FATTR_SIZE.to_ne_bytes());
        let err = call(
            &d,
            &header(opcode::SETATTR, inode::REFRESH_FILE),
            &setattr,
            &[],
        );
        assert_eq!(err, Err(libc::EROFS));
    }

    #[test]
    fn without_allow_other_other_users_get_eacces() {
        let (d, _) = dispatcher(Some(OWNER));
        let mut h = header(opcode::GETATTR, inode::ROOT);
        h.uid = OWNER + 1;
        assert_eq!(call(&d, &h, &[0; 16], &[]), Err(libc::EACCES));
        h.uid = OWNER;
        assert!(call(&d, &h, &[0; 16], &[]).is_ok());
    }
}
