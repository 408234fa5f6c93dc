//! Append-only files of JSON lines that never keep a partial line: the `jsonl` handler's output
//! and the dead-letter file.
//!
//! A line is either wholly in the file or not at all, whatever stops the write (a full disk, a
//! file-size limit, an I/O error, the daemon killed mid-write):
//! - a failed write is cut back at once to the last whole line ([`LineFile::append`]);
//! - at open, bytes after the last newline (a write torn by a kill) are cut off, or, when the
//!   caller knows the length that was committed with the offset, everything after it
//!   ([`LineFile::open`]), which makes an output **exactly-once**: the events after the commit
//!   are delivered again and written again, once.
//!
//! A new file's directory is fsynced, so a created file survives a power loss with its
//! directory entry.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// An open append-only file of lines.
pub struct LineFile {
    path: PathBuf,
    file: File,
    /// The file's length: whole lines only.
    len: u64,
    /// Device and inode of the open file (a committed length is only ever applied to it).
    identity: (u64, u64),
    /// Why the file can no longer be trusted (a cut that failed): every later write fails.
    broken: Option<String>,
    /// How it was opened (mode, links refused or not): a file made anew after a rotation is
    /// made the same way.
    options: OpenOptions,
}

/// A length committed with the offset: which file, how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    pub length: u64,
    /// Device and inode of the file it is of, when known (caches of before it was kept: not).
    pub identity: Option<(u64, u64)>,
}

/// Device and inode of an open file.
fn identity_of(file: &File) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().map(|m| (m.dev(), m.ino()))
}

/// What [`LineFile::open`] did to the file, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Repair {
    /// Nothing to do.
    None,
    /// The file did not exist: created (and its directory synced).
    Created,
    /// Bytes written after the committed length were cut: `from` bytes down to `to`.
    CutToCommitted { from: u64, to: u64 },
    /// A partial last line (no newline) was cut: `from` bytes down to `to`.
    CutPartialLine { from: u64, to: u64 },
    /// The file is shorter than the committed length (rotated or truncated by another program):
    /// appending goes on at its end.
    ShorterThanCommitted { len: u64, committed: u64 },
    /// The committed length is of another file (the file was rotated since, or the committed
    /// length does not end a line of it): only a partial last line was cut.
    OtherFile { from: u64, to: u64 },
}

impl LineFile {
    /// Opens `path` for appending, creating it (and its directory) when missing. With
    /// `committed = Some(n)` (the length committed with the offset) a longer file is cut back to
    /// `n` bytes; otherwise a partial last line is cut. A new file gets `mode` (permission bits,
    /// the umask can only take away; an existing file keeps its own), a new directory
    /// [`DIR_MODE`](crate::state_file::DIR_MODE). Errors name the path.
    pub fn open(
        path: &Path,
        committed: Option<Committed>,
        mode: u32,
    ) -> Result<(LineFile, Repair), String> {
        let mut options = OpenOptions::new();
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        Self::open_with(options, path, committed)
    }

    /// [`open`](Self::open) for a file of the state directory: never through a symbolic link,
    /// created 0600 ([`crate::state_file`]).
    pub fn open_state_file(
        path: &Path,
        committed: Option<Committed>,
    ) -> Result<(LineFile, Repair), String> {
        Self::open_with(crate::state_file::options(), path, committed)
    }

    fn open_with(
        mut options: OpenOptions,
        path: &Path,
        committed: Option<Committed>,
    ) -> Result<(LineFile, Repair), String> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            crate::state_file::create_dir_all(dir)
                .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        }
        let existed = path.exists();
        let kept = options.clone();
        options.read(true).create(true).append(true);
        let mut file = crate::state_file::open(&options, path)
            .map_err(|e| format!("cannot open {} for appending: {e}", path.display()))?;
        let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
        if !existed {
            if let Some(dir) = dir {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| fail("cannot sync the directory of", e))?;
            }
        }
        let len = file
            .metadata()
            .map_err(|e| fail("cannot read the metadata of", e))?
            .len();
        let identity = identity_of(&file).map_err(|e| fail("cannot read the metadata of", e))?;
        // A committed length applies to the very file it was committed with, where it ends a
        // line; otherwise (rotated since) only a partial last line is cut.
        let mut other_file = false;
        let committed = match committed {
            Some(c) if c.identity.is_some_and(|id| id != identity) => {
                other_file = true;
                None
            }
            Some(c) if c.length > 0 && c.length <= len => {
                let mut byte = [0u8];
                file.seek(SeekFrom::Start(c.length - 1))
                    .and_then(|_| file.read_exact(&mut byte))
                    .map_err(|e| fail("cannot read", e))?;
                if byte[0] == b'\n' {
                    Some(c.length)
                } else {
                    other_file = true;
                    None
                }
            }
            Some(c) => Some(c.length),
            None => None,
        };
        let (keep, repair) = match committed {
            Some(committed) if len > committed => (
                committed,
                Repair::CutToCommitted {
                    from: len,
                    to: committed,
                },
            ),
            Some(committed) if len < committed => {
                let keep = whole_lines_len(&mut file, len).map_err(|e| fail("cannot read", e))?;
                let repair = Repair::ShorterThanCommitted { len, committed };
                (keep, repair)
            }
            _ => {
                let keep = whole_lines_len(&mut file, len).map_err(|e| fail("cannot read", e))?;
                let repair = if other_file {
                    Repair::OtherFile {
                        from: len,
                        to: keep,
                    }
                } else if keep < len {
                    Repair::CutPartialLine {
                        from: len,
                        to: keep,
                    }
                } else if existed {
                    Repair::None
                } else {
                    Repair::Created
                };
                (keep, repair)
            }
        };
        if keep < len {
            file.set_len(keep)
                .and_then(|()| file.sync_data())
                .map_err(|e| fail("cannot cut back", e))?;
        }
        Ok((
            LineFile {
                // Absolute: the path committed with the offset must name this file from any
                // working directory.
                path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
                file,
                len: keep,
                identity,
                broken: None,
                options: kept,
            },
            repair,
        ))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length in bytes (whole lines only).
    pub fn length(&self) -> u64 {
        self.len
    }

    /// Appends `lines` (whole lines, each ending in `\n`) in one write. On failure the file is
    /// cut back to its length before the call, so no part of `lines` stays in it.
    pub fn append(&mut self, lines: &[u8]) -> std::io::Result<()> {
        if let Some(broken) = &self.broken {
            return Err(std::io::Error::other(broken.clone()));
        }
        if lines.is_empty() {
            return Ok(());
        }
        match self.file.write_all(lines) {
            Ok(()) => {
                self.len += lines.len() as u64;
                Ok(())
            }
            Err(error) => {
                let length = self.len;
                if let Err(cut) = self.cut(length) {
                    tracing::error!(
                        "{}: cannot cut a failed write back to {length} bytes: {cut}",
                        self.path.display()
                    );
                }
                Err(error)
            }
        }
    }

    /// Cuts the file back to `len` bytes (a line boundary it had before), never making it
    /// longer than it is. A cut that fails leaves the file untrusted: every later write fails.
    pub fn cut(&mut self, len: u64) -> std::io::Result<()> {
        let result = self
            .file
            .metadata()
            .and_then(|meta| match len < meta.len() {
                true => self.file.set_len(len),
                false => Ok(()),
            });
        match result {
            Ok(()) => {
                self.len = self.len.min(len);
                Ok(())
            }
            Err(error) => {
                self.broken = Some(format!(
                    "{}: a cut back to {len} bytes failed ({error}): the file may hold a partial \
                     or taken-back line; nothing more is written to it until a restart",
                    self.path.display()
                ));
                Err(error)
            }
        }
    }

    /// Device and inode of the open file.
    pub fn identity(&self) -> (u64, u64) {
        self.identity
    }

    /// Whether the file at the path is still the open file; when another program moved,
    /// deleted or replaced it (log rotation), the file now at the path (created when missing)
    /// is opened in its place: `true`. Lines already appended stay where they went.
    pub fn reopen_if_replaced(&mut self) -> Result<bool, String> {
        use std::os::unix::fs::MetadataExt;
        let open = self
            .file
            .metadata()
            .map_err(|e| format!("cannot read the metadata of {}: {e}", self.path.display()))?;
        let same = std::fs::metadata(&self.path)
            .is_ok_and(|at_path| (at_path.dev(), at_path.ino()) == (open.dev(), open.ino()));
        if same && open.len() >= self.len {
            return Ok(false);
        }
        if same {
            // Truncated in place (`copytruncate`): go on at its (whole-lined) end.
            let keep = whole_lines_len(&mut self.file, open.len())
                .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
            tracing::info!(
                "{}: the file was truncated by another program (rotated?) to {} bytes; \
                 appending at its end",
                self.path.display(),
                open.len()
            );
            self.len = keep;
            self.cut(keep)
                .map_err(|e| format!("cannot cut {}: {e}", self.path.display()))?;
            return Ok(true);
        }
        // What went to the moved file reaches its disk before the commit that counts it.
        self.file
            .sync_data()
            .map_err(|e| format!("cannot sync {}: {e}", self.path.display()))?;
        let (file, repair) = LineFile::open_with(self.options.clone(), &self.path, None)?;
        tracing::info!(
            "{}: the file was moved, deleted or replaced by another program (rotated?); \
             appending to the file now at that path",
            self.path.display()
        );
        repair.log(&self.path, "output");
        *self = file;
        Ok(true)
    }

    /// Makes what was appended durable (`fdatasync`).
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}

impl Repair {
    /// Logs what was done, naming the file and, for `what`, whose file it is.
    pub fn log(&self, path: &Path, what: &str) {
        let path = path.display();
        match self {
            Repair::None | Repair::Created => {}
            Repair::CutToCommitted { from, to } => tracing::info!(
                "{what} {path}: cut from {from} to {to} bytes, the length committed with the \
                 offset; the {} bytes after it are delivered and written again",
                from - to
            ),
            Repair::CutPartialLine { from, to } => tracing::warn!(
                "{what} {path}: cut a partial last line ({} bytes, left by an interrupted write)",
                from - to
            ),
            Repair::ShorterThanCommitted { len, committed } => tracing::warn!(
                "{what} {path}: {len} bytes, shorter than the {committed} committed with the \
                 offset (rotated or truncated by another program); appending at its end"
            ),
            Repair::OtherFile { from, to } => tracing::warn!(
                "{what} {path}: not the file whose length was committed with the offset (rotated \
                 since?): not cut back{}; the events after the commit are appended again",
                if from > to {
                    format!(" (a partial last line of {} bytes was cut)", from - to)
                } else {
                    String::new()
                }
            ),
        }
    }
}

/// The length of the whole lines of a file of `len` bytes: up to and including its last
/// newline (reads backwards from the end, 4 KiB at a time).
fn whole_lines_len(file: &mut File, len: u64) -> std::io::Result<u64> {
    let mut end = len;
    let mut chunk = [0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(at) = part.iter().rposition(|&b| b == b'\n') {
            return Ok(start + at as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_last_line_is_cut_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.jsonl");
        let (mut file, repair) =
            LineFile::open(&path, None, crate::state_file::OUTPUT_MODE).unwrap();
        assert_eq!(repair, Repair::Created);
        file.append(b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        drop(file);
        let mut torn = std::fs::read(&path).unwrap();
        torn.extend_from_slice(b"{\"a\":3");
        std::fs::write(&path, &torn).unwrap();
        let (file, repair) = LineFile::open(&path, None, crate::state_file::OUTPUT_MODE).unwrap();
        assert_eq!(repair, Repair::CutPartialLine { from: 22, to: 16 });
        assert_eq!(file.length(), 16);
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
    }

    #[test]
    fn a_committed_length_cuts_what_came_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, b"one\ntwo\nthree\n").unwrap();
        let (file, repair) = LineFile::open(
            &path,
            Some(Committed {
                length: 4,
                identity: None,
            }),
            crate::state_file::OUTPUT_MODE,
        )
        .unwrap();
        assert_eq!(repair, Repair::CutToCommitted { from: 14, to: 4 });
        assert_eq!(file.length(), 4);
        assert_eq!(std::fs::read(&path).unwrap(), b"one\n");
        // A file shorter than committed (rotated): kept, its partial line cut.
        std::fs::write(&path, b"x\ny").unwrap();
        let (file, repair) = LineFile::open(
            &path,
            Some(Committed {
                length: 100,
                identity: None,
            }),
            crate::state_file::OUTPUT_MODE,
        )
        .unwrap();
        assert_eq!(
            repair,
            Repair::ShorterThanCommitted {
                len: 3,
                committed: 100
            }
        );
        assert_eq!(file.length(), 2);
    }

    #[test]
    fn a_line_longer_than_the_read_chunk_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut text = vec![b'a'; 10_000];
        text.push(b'\n');
        text.extend(vec![b'b'; 9_000]);
        std::fs::write(&path, &text).unwrap();
        let (file, _) = LineFile::open(&path, None, crate::state_file::OUTPUT_MODE).unwrap();
        assert_eq!(file.length(), 10_001);
    }

    #[test]
    fn a_rotated_file_is_reopened_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let (mut file, _) = LineFile::open(&path, None, crate::state_file::OUTPUT_MODE).unwrap();
        file.append(b"one\n").unwrap();
        assert!(!file.reopen_if_replaced().unwrap());
        std::fs::rename(&path, dir.path().join("out.jsonl.1")).unwrap();
        assert!(file.reopen_if_replaced().unwrap());
        file.append(b"two\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two\n");
        assert_eq!(
            std::fs::read(dir.path().join("out.jsonl.1")).unwrap(),
            b"one\n"
        );
        assert_eq!(file.length(), 4);
    }

    #[test]
    fn a_file_truncated_in_place_is_appended_to_at_its_end_never_padded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let (mut file, _) = LineFile::open(&path, None, crate::state_file::OUTPUT_MODE).unwrap();
        file.append(b"one\ntwo\n").unwrap();
        // `copytruncate`: the same inode, emptied.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert!(file.reopen_if_replaced().unwrap());
        assert_eq!(file.length(), 0);
        file.append(b"three\n").unwrap();
        file.cut(100).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three\n");
    }

    #[test]
    fn a_length_committed_with_another_file_is_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, b"new file line one\nnew file line two\n").unwrap();
        let (file, _) = LineFile::open(&path, None, crate::state_file::OUTPUT_MODE).unwrap();
        let (dev, ino) = file.identity();
        drop(file);
        // Committed with another inode (rotated since): not cut.
        let other = Committed {
            length: 5,
            identity: Some((dev, ino + 1)),
        };
        let (file, repair) =
            LineFile::open(&path, Some(other), crate::state_file::OUTPUT_MODE).unwrap();
        assert_eq!(repair, Repair::OtherFile { from: 36, to: 36 });
        assert_eq!(file.length(), 36);
        // The same inode, but a length that does not end a line: not cut either.
        let mid_line = Committed {
            length: 5,
            identity: Some((dev, ino)),
        };
        let (file, repair) =
            LineFile::open(&path, Some(mid_line), crate::state_file::OUTPUT_MODE).unwrap();
        assert_eq!(repair, Repair::OtherFile { from: 36, to: 36 });
        assert_eq!(file.length(), 36);
        // Its own committed length, on a line end: cut.
        let own = Committed {
            length: 18,
            identity: Some((dev, ino)),
        };
        let (file, _) = LineFile::open(&path, Some(own), crate::state_file::OUTPUT_MODE).unwrap();
        assert_eq!(file.length(), 18);
    }
}
