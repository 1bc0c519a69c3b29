//! The WAL's file I/O, behind a small trait so tests can break it on
//! purpose: [`Fs`] is the real thing (std::fs plus `fallocate`), and
//! `mem::MemStorage` is a model that keeps synced and unsynced bytes apart
//! and injects ENOSPC, EIO, torn writes and crashes. The model is built for
//! the crate's own tests and with the `fault-injection` feature (which the
//! integration tests, benches and fuzz targets turn on); the product binary
//! carries only [`Fs`].
//!
//! The writer needs only: create a segment, positional write, `fdatasync`,
//! truncate, length, preallocate; read, list and remove segments; fsync the
//! directory.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// One open segment file.
pub trait SegmentFile {
    /// Write all of `bytes` at `offset` (a short write is an error).
    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`: the file's data and size are durable when this returns Ok.
    fn sync_data(&mut self) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
    /// Reserve disk space for `[offset, offset + len)`, extending the file
    /// with zeros. `Ok(false)` when the filesystem cannot preallocate.
    fn allocate(&mut self, offset: u64, len: u64) -> io::Result<bool>;
}

/// A directory of segment files.
pub trait Storage {
    type File: SegmentFile;
    /// Create `dir` (and parents) owner-only.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Paths of the entries of `dir` (not found → empty).
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Size of a file in bytes.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Create a new, empty file (fails if it exists), owner-only.
    fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Open an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Self::File>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// fsync the directory: its entries (created, removed files) are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fs;

/// A segment on the real filesystem.
#[derive(Debug)]
pub struct FsFile(File);

impl SegmentFile for FsFile {
    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(bytes, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn allocate(&mut self, offset: u64, len: u64) -> io::Result<bool> {
        let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Ok(false);
        };
        // SAFETY: fallocate on a file descriptor we own; no memory is passed.
        // Mode 0 allocates blocks and extends the size, the new bytes read
        // as zeros (what the decoder treats as a clean end).
        let rc = unsafe { libc::fallocate(self.0.as_raw_fd(), 0, off, n) };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => Ok(false),
            _ => Err(e),
        }
    }
}

impl Storage for Fs {
    type File = FsFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        crate::util::create_private_dir(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        entries.map(|e| e.map(|e| e.path())).collect()
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn create(&self, path: &Path) -> io::Result<FsFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map(FsFile)
    }

    fn open(&self, path: &Path) -> io::Result<FsFile> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map(FsFile)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

#[cfg(any(test, feature = "fault-injection"))]
pub mod mem {
    //! An in-memory disk for model-based tests. Every file keeps what reads
    //! see (`data`) apart from what survives a crash (`disk`); `fdatasync`
    //! copies one to the other, [`MemStorage::crash`] throws the difference
    //! away. Directory entries are durable only after `sync_dir`.
    //!
    //! A failed `fdatasync` (EIO) behaves as Linux does: the dirty bytes are
    //! marked clean without reaching the disk, so a later `fdatasync` that
    //! succeeds still does not persist them. This is why the writer must
    //! never retry one; handles count any attempt ([`MemStorage::retried_syncs`]).

    use std::collections::BTreeMap;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, MutexGuard};

    use super::{SegmentFile, Storage};

    /// Which operation a fault hits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum FaultOp {
        Write,
        Sync,
        Allocate,
        SetLen,
        Create,
        SyncDir,
        Remove,
    }

    /// A fault armed for the next operation of its kind.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Fault {
        pub op: FaultOp,
        /// ENOSPC rather than EIO.
        pub no_space: bool,
        /// For writes: how many bytes land before the error (a torn write).
        pub partial: usize,
    }

    #[derive(Debug, Default, Clone)]
    struct Inode {
        data: Vec<u8>,
        disk: Vec<u8>,
        /// Bytes whose write-back failed: clean in the cache, absent on disk.
        lost: Vec<bool>,
    }

    impl Inode {
        fn persist(&mut self) {
            let old = std::mem::take(&mut self.disk);
            let mut disk = self.data.clone();
            for (i, b) in disk.iter_mut().enumerate() {
                if self.lost.get(i).copied().unwrap_or(false) {
                    *b = old.get(i).copied().unwrap_or(0);
                }
            }
            self.disk = disk;
        }
    }

    #[derive(Debug, Default)]
    struct Disk {
        inodes: Vec<Inode>,
        names: BTreeMap<PathBuf, usize>,
        durable_names: BTreeMap<PathBuf, usize>,
        fault: Option<Fault>,
        /// Total bytes the files may hold; `None` is unlimited.
        capacity: Option<usize>,
        retried_syncs: u64,
    }

    impl Disk {
        fn used(&self) -> usize {
            self.names
                .values()
                .map(|&i| self.inodes[i].data.len())
                .sum()
        }

        fn take_fault(&mut self, op: FaultOp) -> Option<Fault> {
            match self.fault {
                Some(f) if f.op == op => self.fault.take(),
                _ => None,
            }
        }
    }

    fn err(f: &Fault) -> io::Error {
        io::Error::from_raw_os_error(if f.no_space { libc::ENOSPC } else { libc::EIO })
    }

    fn no_space() -> io::Error {
        io::Error::from_raw_os_error(libc::ENOSPC)
    }

    /// The shared in-memory disk; clones see the same files.
    #[derive(Debug, Clone, Default)]
    pub struct MemStorage(Arc<Mutex<Disk>>);

    impl MemStorage {
        pub fn new() -> Self {
            Self::default()
        }

        fn disk(&self) -> MutexGuard<'_, Disk> {
            self.0.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Arm a fault for the next operation of its kind (replacing any
        /// fault not yet fired).
        pub fn inject(&self, fault: Fault) {
            self.disk().fault = Some(fault);
        }

        pub fn clear_fault(&self) {
            self.disk().fault = None;
        }

        /// Limit the bytes all files may hold together (`None`: no limit).
        pub fn set_capacity(&self, cap: Option<usize>) {
            self.disk().capacity = cap;
        }

        pub fn used(&self) -> usize {
            self.disk().used()
        }

        /// Power loss: unsynced bytes and unsynced directory entries vanish.
        pub fn crash(&self) {
            let mut d = self.disk();
            d.names = d.durable_names.clone();
            for ino in &mut d.inodes {
                ino.data = ino.disk.clone();
                ino.lost = Vec::new();
            }
            d.fault = None;
        }

        /// Current bytes of a file (what a read sees).
        pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
            let d = self.disk();
            d.names.get(path).map(|&i| d.inodes[i].data.clone())
        }

        /// Overwrite a file's bytes, durably (to model damage on disk).
        pub fn set_contents(&self, path: &Path, bytes: Vec<u8>) {
            let mut d = self.disk();
            if let Some(&i) = d.names.get(path) {
                let ino = &mut d.inodes[i];
                ino.lost = vec![false; bytes.len()];
                ino.disk = bytes.clone();
                ino.data = bytes;
            }
        }

        /// Times a handle called `fdatasync` again after one had failed.
        pub fn retried_syncs(&self) -> u64 {
            self.disk().retried_syncs
        }
    }

    /// A handle on a file of a [`MemStorage`].
    #[derive(Debug)]
    pub struct MemFile {
        storage: MemStorage,
        inode: usize,
        sync_failed: bool,
    }

    impl SegmentFile for MemFile {
        fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
            let mut d = self.storage.disk();
            let fault = d.take_fault(super::mem::FaultOp::Write);
            let offset = offset as usize;
            let mut n = bytes.len();
            let mut result = Ok(());
            if let Some(f) = &fault {
                n = f.partial.min(bytes.len());
                result = Err(err(f));
            }
            let cur = d.inodes[self.inode].data.len();
            let grow = (offset + n).saturating_sub(cur);
            if let Some(cap) = d.capacity {
                let free = cap.saturating_sub(d.used());
                if grow > free {
                    n = (cur + free).saturating_sub(offset).min(n);
                    result = Err(no_space());
                }
            }
            let ino = &mut d.inodes[self.inode];
            if ino.data.len() < offset + n {
                ino.data.resize(offset + n, 0);
            }
            ino.lost.resize(ino.data.len(), false);
            ino.data[offset..offset + n].copy_from_slice(&bytes[..n]);
            ino.lost[offset..offset + n].fill(false);
            result
        }

        fn sync_data(&mut self) -> io::Result<()> {
            let mut d = self.storage.disk();
            if self.sync_failed {
                d.retried_syncs += 1;
            }
            if let Some(f) = d.take_fault(FaultOp::Sync) {
                let ino = &mut d.inodes[self.inode];
                let len = ino.data.len();
                ino.lost.resize(len, false);
                for i in 0..len {
                    if ino.disk.get(i) != Some(&ino.data[i]) {
                        ino.lost[i] = true;
                    }
                }
                self.sync_failed = true;
                return Err(err(&f));
            }
            d.inodes[self.inode].persist();
            Ok(())
        }

        fn set_len(&mut self, len: u64) -> io::Result<()> {
            let mut d = self.storage.disk();
            if let Some(f) = d.take_fault(FaultOp::SetLen) {
                return Err(err(&f));
            }
            let len = len as usize;
            let cur = d.inodes[self.inode].data.len();
            if let Some(cap) = d.capacity {
                if len > cur && len - cur > cap.saturating_sub(d.used()) {
                    return Err(no_space());
                }
            }
            let ino = &mut d.inodes[self.inode];
            ino.data.resize(len, 0);
            ino.lost.resize(len, false);
            Ok(())
        }

        fn size(&self) -> io::Result<u64> {
            let d = self.storage.disk();
            Ok(d.inodes[self.inode].data.len() as u64)
        }

        fn allocate(&mut self, offset: u64, len: u64) -> io::Result<bool> {
            let mut d = self.storage.disk();
            if let Some(f) = d.take_fault(FaultOp::Allocate) {
                return Err(err(&f));
            }
            let want = (offset + len) as usize;
            let cur = d.inodes[self.inode].data.len();
            if want > cur {
                if let Some(cap) = d.capacity {
                    if want - cur > cap.saturating_sub(d.used()) {
                        return Err(no_space());
                    }
                }
                let ino = &mut d.inodes[self.inode];
                ino.data.resize(want, 0);
                ino.lost.resize(want, false);
            }
            Ok(true)
        }
    }

    fn not_found() -> io::Error {
        io::Error::from(io::ErrorKind::NotFound)
    }

    impl Storage for MemStorage {
        type File = MemFile;

        fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
            Ok(())
        }

        fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
            let d = self.disk();
            Ok(d.names
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .cloned()
                .collect())
        }

        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            self.contents(path).ok_or_else(not_found)
        }

        fn file_len(&self, path: &Path) -> io::Result<u64> {
            self.read(path).map(|b| b.len() as u64)
        }

        fn create(&self, path: &Path) -> io::Result<MemFile> {
            let mut d = self.disk();
            if let Some(f) = d.take_fault(FaultOp::Create) {
                return Err(err(&f));
            }
            if d.names.contains_key(path) {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            d.inodes.push(Inode::default());
            let inode = d.inodes.len() - 1;
            d.names.insert(path.to_owned(), inode);
            Ok(MemFile {
                storage: self.clone(),
                inode,
                sync_failed: false,
            })
        }

        fn open(&self, path: &Path) -> io::Result<MemFile> {
            let d = self.disk();
            let inode = *d.names.get(path).ok_or_else(not_found)?;
            Ok(MemFile {
                storage: self.clone(),
                inode,
                sync_failed: false,
            })
        }

        fn remove(&self, path: &Path) -> io::Result<()> {
            let mut d = self.disk();
            if let Some(f) = d.take_fault(FaultOp::Remove) {
                return Err(err(&f));
            }
            d.names.remove(path).map(|_| ()).ok_or_else(not_found)
        }

        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            let mut d = self.disk();
            if let Some(f) = d.take_fault(FaultOp::SyncDir) {
                return Err(err(&f));
            }
            let current: Vec<(PathBuf, usize)> = d
                .names
                .iter()
                .filter(|(p, _)| p.parent() == Some(dir))
                .map(|(p, &i)| (p.clone(), i))
                .collect();
            d.durable_names.retain(|p, _| p.parent() != Some(dir));
            d.durable_names.extend(current);
            Ok(())
        }
    }
}
