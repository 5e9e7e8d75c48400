//! The gzip container (RFC 1952) around stored deflate blocks (RFC 1951,
//! BTYPE 00): what pprof tools expect of a profile file, without a deflate
//! implementation. A profile of a few thousand stacks is some hundred KB
//! either way; compressing it is not worth a dependency in a binary made to
//! fit on small boards. Reading takes the same (and any other writer's
//! stored blocks); compressed blocks are refused with a way around them.

use crate::error::{Error, Result};
use crate::process::debug_file::crc32;

const MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Largest stored block: LEN is 16 bits.
const BLOCK: usize = 0xffff;

pub fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// `data` in a gzip member of stored blocks.
pub fn wrap(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / BLOCK * 5 + 32);
    // CM 8 (deflate), no flags, no mtime, XFL 0, OS 3 (Unix).
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    let mut chunks = data.chunks(BLOCK).peekable();
    if chunks.peek().is_none() {
        // An empty input still needs one (final, empty) block.
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let len = chunk.len() as u16;
        out.push(u8::from(last)); // BFINAL, BTYPE 00, then padding to the byte.
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// The contents of a gzip file made of stored blocks, checked against its
/// CRC and length.
pub fn unwrap(data: &[u8]) -> Result<Vec<u8>> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let truncated = || Error::format("truncated gzip data");
    if !is_gzip(data) || data.len() < 10 || data[2] != 8 {
        return Err(Error::format("not gzip (deflate) data"));
    }
    let flags = data[3];
    let mut pos = 10;
    if flags & FEXTRA != 0 {
        let len = data.get(pos..pos + 2).ok_or_else(truncated)?;
        pos += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let end = data
                .get(pos..)
                .and_then(|d| d.iter().position(|&b| b == 0))
                .ok_or_else(truncated)?;
            pos += end + 1;
        }
    }
    if flags & FHCRC != 0 {
        pos += 2;
    }
    let mut out = Vec::new();
    loop {
        // Every block starts on a byte boundary: the blocks before it were
        // stored ones, which end on one.
        let header = *data.get(pos).ok_or_else(truncated)?;
        if (header >> 1) & 3 != 0 {
            return Err(Error::format("compressed gzip data (memleak reads the stored blocks it writes): decompress it first, e.g. gunzip, and give the plain profile"));
        }
        let lens = data.get(pos + 1..pos + 5).ok_or_else(truncated)?;
        let len = u16::from_le_bytes([lens[0], lens[1]]);
        if len != !u16::from_le_bytes([lens[2], lens[3]]) {
            return Err(Error::format("corrupt gzip data (stored block length)"));
        }
        pos += 5;
        let block = data
            .get(pos..pos + usize::from(len))
            .ok_or_else(truncated)?;
        out.extend_from_slice(block);
        pos += usize::from(len);
        if header & 1 != 0 {
            break;
        }
    }
    let trailer = data.get(pos..pos + 8).ok_or_else(truncated)?;
    let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
    if crc != crc32(&out) || size != out.len() as u32 {
        return Err(Error::format("corrupt gzip data (CRC or length mismatch)"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_across_block_boundaries() {
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 300) as u8).collect();
            let wrapped = wrap(&data);
            assert!(is_gzip(&wrapped));
            assert_eq!(unwrap(&wrapped).unwrap(), data, "length {len}");
        }
    }

    /// gzip(1) reads what we write, and we read what `gzip -0`-like
    /// writers with a file name in the header produce.
    #[test]
    fn gzip_tool_agrees() {
        let data = b"profile bytes \x00\x01\x02 and more".repeat(5000);
        let dir = std::env::temp_dir().join(format!("memleak-gzip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.gz");
        std::fs::write(&file, wrap(&data)).unwrap();
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&file)
            .output()
            .expect("gzip runs");
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
        // Compressed data: one clear error.
        let out = std::process::Command::new("gzip")
            .arg("-c")
            .arg(&file)
            .output()
            .unwrap();
        assert!(unwrap(&out.stdout)
            .unwrap_err()
            .to_string()
            .contains("gunzip"));
        // With a name field in the header (FNAME) and stored blocks.
        let mut named = wrap(b"abc");
        named[3] = 8;
        named.splice(10..10, b"p\0".iter().copied());
        assert_eq!(unwrap(&named).unwrap(), b"abc");
        let mut bad = wrap(b"abc");
        let n = bad.len();
        bad[n - 8] ^= 1;
        assert!(unwrap(&bad).unwrap_err().to_string().contains("CRC"));
        assert!(unwrap(&wrap(b"abcdef")[..20]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
