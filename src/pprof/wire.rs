//! The protobuf wire format, as much of it as profile.proto uses: varints
//! and length-delimited fields (nested messages, strings, packed repeated
//! integers). Fixed-width fields are skipped when read; nothing here writes
//! them.

use crate::error::{Error, Result};

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

pub fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, u64::from(field) << 3 | u64::from(wire));
}

/// An integer field; zero (the default) is left out, as proto3 does.
pub fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(out, field, VARINT);
        varint(out, v);
    }
}

pub fn int(out: &mut Vec<u8>, field: u32, v: i64) {
    uint(out, field, v as u64);
}

/// A length-delimited field, written even when empty (string_table's
/// first entry is the empty string and must be there).
pub fn bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    key(out, field, LEN);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// A nested message, built by `body`.
pub fn message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    body(&mut inner);
    bytes(out, field, &inner);
}

/// A nested message of integer fields 1, 2, ... with these values (most
/// of profile.proto's messages are such).
pub fn scalars(out: &mut Vec<u8>, field: u32, values: &[u64]) {
    message(out, field, |m| {
        for (number, &v) in (1..).zip(values) {
            uint(m, number, v);
        }
    });
}

/// A packed repeated integer field (left out when empty).
pub fn packed(out: &mut Vec<u8>, field: u32, values: impl IntoIterator<Item = u64>) {
    let mut inner = Vec::new();
    for v in values {
        varint(&mut inner, v);
    }
    if !inner.is_empty() {
        bytes(out, field, &inner);
    }
}

/// A field's value as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Int(u64),
    Bytes(&'a [u8]),
    /// A fixed-width value, which profile.proto does not use.
    Other,
}

impl<'a> Value<'a> {
    pub fn int(self) -> Result<u64> {
        match self {
            Value::Int(v) => Ok(v),
            _ => Err(Error::format("a protobuf field has the wrong wire type")),
        }
    }

    pub fn bytes(self) -> Result<&'a [u8]> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(Error::format("a protobuf field has the wrong wire type")),
        }
    }

    /// A repeated integer field, packed or not: appends its values.
    pub fn ints_into(self, out: &mut Vec<u64>) -> Result<()> {
        match self {
            Value::Int(v) => out.push(v),
            Value::Bytes(mut b) => {
                while !b.is_empty() {
                    out.push(read_varint(&mut b)?);
                }
            }
            Value::Other => return Err(Error::format("a protobuf field has the wrong wire type")),
        }
        Ok(())
    }
}

fn read_varint(data: &mut &[u8]) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = data
            .split_first()
            .ok_or(Error::format("truncated protobuf data (varint)"))?;
        *data = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Error::format("corrupt protobuf data (varint too long)"))
}

/// The integer fields of a message by number (index 0 unused; numbers
/// past the array and other wire types are skipped).
pub fn read_scalars(data: &[u8]) -> Result<[u64; 12]> {
    let mut values = [0; 12];
    for field in Fields::new(data) {
        if let (n, Value::Int(v)) = field? {
            if let Some(slot) = values.get_mut(n as usize) {
                *slot = v;
            }
        }
    }
    Ok(values)
}

/// Iterates over the fields of one message.
pub struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(data: &'a [u8]) -> Fields<'a> {
        Fields { data }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        let mut field = || -> Result<(u32, Value<'a>)> {
            let k = read_varint(&mut self.data)?;
            let number = u32::try_from(k >> 3)
                .map_err(|_| Error::format("corrupt protobuf field number"))?;
            let value = match (k & 7) as u8 {
                VARINT => Value::Int(read_varint(&mut self.data)?),
                LEN => {
                    let len = usize::try_from(read_varint(&mut self.data)?)
                        .map_err(|_| Error::format("corrupt protobuf length"))?;
                    if len > self.data.len() {
                        return Err(Error::format("truncated protobuf data"));
                    }
                    let (v, rest) = self.data.split_at(len);
                    self.data = rest;
                    Value::Bytes(v)
                }
                wire @ (FIXED64 | FIXED32) => {
                    let n = if wire == FIXED64 { 8 } else { 4 };
                    if n > self.data.len() {
                        return Err(Error::format("truncated protobuf data"));
                    }
                    self.data = &self.data[n..];
                    Value::Other
                }
                other => {
                    return Err(Error::Format(format!(
                        "unsupported protobuf wire type {other}"
                    )))
                }
            };
            Ok((number, value))
        };
        let item = field();
        if item.is_err() {
            // Stop after an error: the rest cannot be framed.
            self.data = &[];
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u32::MAX as u64,
            u64::MAX,
            (-1i64) as u64,
        ] {
            let mut buf = Vec::new();
            varint(&mut buf, v);
            let mut slice = buf.as_slice();
            assert_eq!(read_varint(&mut slice).unwrap(), v);
            assert!(slice.is_empty());
        }
        let mut buf = Vec::new();
        varint(&mut buf, 300);
        assert_eq!(buf, [0xac, 0x02], "the protobuf documentation's example");
    }

    #[test]
    fn fields_read_back() {
        let mut buf = Vec::new();
        uint(&mut buf, 1, 150);
        bytes(&mut buf, 2, b"testing");
        packed(&mut buf, 4, [3, 270, 86942]);
        uint(&mut buf, 5, 0);
        message(&mut buf, 6, |m| uint(m, 1, 7));
        let fields: Vec<(u32, Value)> = Fields::new(&buf).map(Result::unwrap).collect();
        assert_eq!(fields[0], (1, Value::Int(150)));
        assert_eq!(fields[1], (2, Value::Bytes(b"testing")));
        let mut ints = Vec::new();
        fields[2].1.ints_into(&mut ints).unwrap();
        Value::Int(9).ints_into(&mut ints).unwrap();
        assert_eq!(ints, [3, 270, 86942, 9]);
        assert_eq!(fields[3], (6, Value::Bytes(&[8, 7])));
        assert_eq!(fields.len(), 4, "zero is the default and left out");
        assert!(Fields::new(&[0x0a, 5, 1]).next().unwrap().is_err());
        assert!(Fields::new(&[0x80]).next().unwrap().is_err());
    }
}
