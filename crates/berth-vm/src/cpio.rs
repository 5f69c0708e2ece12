//! Writes initramfs archives in the kernel's "newc" cpio format (the only one it unpacks).

use std::io::{self, Write};

/// An archive being written; entries are added in order, parents first.
pub struct CpioWriter<W: Write> {
    out: W,
    next_inode: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            next_inode: 1,
            written: 0,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let name_len = name.len() + 1;
        let header = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.next_inode,
            mode,
            0, // uid
            0, // gid
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0, // mtime: fixed, so the archive is reproducible
            data.len(),
            0,
            0,
            0,
            0,
            name_len,
            0
        );
        self.next_inode += 1;
        self.write_padded(header.as_bytes(), &[name.as_bytes(), b"\0"].concat())?;
        self.write_data(data)
    }

    fn write_padded(&mut self, header: &[u8], name: &[u8]) -> io::Result<()> {
        self.out.write_all(header)?;
        self.out.write_all(name)?;
        self.written += (header.len() + name.len()) as u64;
        self.pad()
    }

    fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        self.pad()
    }

    fn pad(&mut self) -> io::Result<()> {
        let padding = (4 - (self.written % 4) as usize) % 4;
        self.out.write_all(&[0u8; 3][..padding])?;
        self.written += padding as u64;
        Ok(())
    }

    pub fn directory(&mut self, name: &str) -> io::Result<()> {
        self.entry(name, 0o040755, &[])
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, 0o100000 | (mode & 0o7777), data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, 0o120777, target.as_bytes())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, &[])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned() {
        let mut writer = CpioWriter::new(Vec::new());
        writer.directory("bin").unwrap();
        writer.file("bin/x", 0o755, b"abc").unwrap();
        writer.symlink("bin/y", "x").unwrap();
        let archive = writer.finish().unwrap();
        assert!(archive.starts_with(b"070701"));
        assert_eq!(archive.len() % 4, 0);
        assert!(archive.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
