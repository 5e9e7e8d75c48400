//! `--pprof FILE`: the outstanding allocations as a pprof profile
//! (github.com/google/pprof proto/profile.proto), the format `go tool
//! pprof`, Pyroscope, Parca and speedscope read.
//!
//! A sample per stack with two values, `inuse_objects`/count and
//! `inuse_space`/bytes; a location per return address, with the mapping
//! (file, build ID, offsets) it lies in and, once named, one line per
//! function there (inlined ones first, the caller last, as pprof models
//! them). With `--raw` the locations carry addresses and mappings only, for
//! `memleak symbolize` (or pprof's own symbolizer) to name on another
//! machine.
//!
//! The protobuf encoding and the gzip container are written here (wire.rs,
//! gzip.rs): a few varints and length-delimited fields do not justify a
//! dependency in a binary that must stay small.

pub mod gzip;
mod wire;

use std::collections::HashMap;
use std::io::Write;

use crate::error::{Error, Result};
use crate::report::Shown;
use crate::symbolize::Frame;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ValueType {
    /// Indices into the string table.
    pub kind: i64,
    pub unit: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Label {
    pub key: i64,
    pub str: i64,
    pub num: i64,
    pub num_unit: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// Leaf first.
    pub location_ids: Vec<u64>,
    pub values: Vec<i64>,
    pub labels: Vec<Label>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    pub id: u64,
    pub memory_start: u64,
    pub memory_limit: u64,
    pub file_offset: u64,
    pub filename: i64,
    pub build_id: i64,
    pub has_functions: bool,
    pub has_filenames: bool,
    pub has_line_numbers: bool,
    pub has_inline_frames: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Line {
    pub function_id: u64,
    pub line: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub id: u64,
    pub mapping_id: u64,
    pub address: u64,
    /// Innermost (inlined) function first, the one the address is in last.
    pub lines: Vec<Line>,
    pub is_folded: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Function {
    pub id: u64,
    pub name: i64,
    pub system_name: i64,
    pub filename: i64,
    pub start_line: i64,
}

/// A profile.proto Profile. Fields another writer may add beyond these
/// are dropped when a file is read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub sample_types: Vec<ValueType>,
    pub samples: Vec<Sample>,
    pub mappings: Vec<Mapping>,
    pub locations: Vec<Location>,
    pub functions: Vec<Function>,
    /// Entry 0 is always "".
    pub strings: Vec<String>,
    pub drop_frames: i64,
    pub keep_frames: i64,
    pub time_nanos: i64,
    pub duration_nanos: i64,
    pub period_type: Option<ValueType>,
    pub period: i64,
    pub comments: Vec<i64>,
    pub default_sample_type: i64,
}

impl Profile {
    /// The serialized message (uncompressed).
    pub fn encode(&self) -> Vec<u8> {
        use wire::{bytes, int, message, packed, scalars};
        let value_type = |out: &mut Vec<u8>, field, v: &ValueType| {
            scalars(out, field, &[v.kind as u64, v.unit as u64]);
        };
        let mut out = Vec::new();
        for t in &self.sample_types {
            value_type(&mut out, 1, t);
        }
        for s in &self.samples {
            message(&mut out, 2, |m| {
                packed(m, 1, s.location_ids.iter().copied());
                packed(m, 2, s.values.iter().map(|&v| v as u64));
                for l in &s.labels {
                    let label = [l.key, l.str, l.num, l.num_unit];
                    scalars(m, 3, &label.map(|v| v as u64));
                }
            });
        }
        for m in &self.mappings {
            let fields = [
                m.id,
                m.memory_start,
                m.memory_limit,
                m.file_offset,
                m.filename as u64,
                m.build_id as u64,
                u64::from(m.has_functions),
                u64::from(m.has_filenames),
                u64::from(m.has_line_numbers),
                u64::from(m.has_inline_frames),
            ];
            scalars(&mut out, 3, &fields);
        }
        for loc in &self.locations {
            message(&mut out, 4, |m| {
                wire::uint(m, 1, loc.id);
                wire::uint(m, 2, loc.mapping_id);
                wire::uint(m, 3, loc.address);
                for line in &loc.lines {
                    scalars(m, 4, &[line.function_id, line.line as u64]);
                }
                wire::uint(m, 5, u64::from(loc.is_folded));
            });
        }
        for f in &self.functions {
            let fields = [f.name, f.system_name, f.filename, f.start_line];
            let mut all = [f.id; 5];
            all[1..].copy_from_slice(&fields.map(|v| v as u64));
            scalars(&mut out, 5, &all);
        }
        for s in &self.strings {
            bytes(&mut out, 6, s.as_bytes());
        }
        int(&mut out, 7, self.drop_frames);
        int(&mut out, 8, self.keep_frames);
        int(&mut out, 9, self.time_nanos);
        int(&mut out, 10, self.duration_nanos);
        if let Some(t) = &self.period_type {
            value_type(&mut out, 11, t);
        }
        int(&mut out, 12, self.period);
        packed(&mut out, 13, self.comments.iter().map(|&c| c as u64));
        int(&mut out, 14, self.default_sample_type);
        out
    }

    /// Parses a serialized Profile, checking that every string index is in
    /// the string table.
    pub fn decode(data: &[u8]) -> Result<Profile> {
        use wire::read_scalars as scalars;
        let mut p = Profile::default();
        let value_type = |data: &[u8]| -> Result<ValueType> {
            let v = scalars(data)?;
            Ok(ValueType {
                kind: v[1] as i64,
                unit: v[2] as i64,
            })
        };
        for field in wire::Fields::new(data) {
            let (number, value) = field?;
            match number {
                1 => p.sample_types.push(value_type(value.bytes()?)?),
                2 => {
                    let mut s = Sample::default();
                    let mut values = Vec::new();
                    for field in wire::Fields::new(value.bytes()?) {
                        match field? {
                            (1, x) => x.ints_into(&mut s.location_ids)?,
                            (2, x) => x.ints_into(&mut values)?,
                            (3, x) => {
                                let v = scalars(x.bytes()?)?;
                                s.labels.push(Label {
                                    key: v[1] as i64,
                                    str: v[2] as i64,
                                    num: v[3] as i64,
                                    num_unit: v[4] as i64,
                                });
                            }
                            _ => {}
                        }
                    }
                    s.values = values.into_iter().map(|v| v as i64).collect();
                    p.samples.push(s);
                }
                3 => {
                    let v = scalars(value.bytes()?)?;
                    p.mappings.push(Mapping {
                        id: v[1],
                        memory_start: v[2],
                        memory_limit: v[3],
                        file_offset: v[4],
                        filename: v[5] as i64,
                        build_id: v[6] as i64,
                        has_functions: v[7] != 0,
                        has_filenames: v[8] != 0,
                        has_line_numbers: v[9] != 0,
                        has_inline_frames: v[10] != 0,
                    });
                }
                4 => {
                    let mut loc = Location::default();
                    for field in wire::Fields::new(value.bytes()?) {
                        match field? {
                            (1, x) => loc.id = x.int()?,
                            (2, x) => loc.mapping_id = x.int()?,
                            (3, x) => loc.address = x.int()?,
                            (4, x) => {
                                let v = scalars(x.bytes()?)?;
                                loc.lines.push(Line {
                                    function_id: v[1],
                                    line: v[2] as i64,
                                });
                            }
                            (5, x) => loc.is_folded = x.int()? != 0,
                            _ => {}
                        }
                    }
                    p.locations.push(loc);
                }
                5 => {
                    let v = scalars(value.bytes()?)?;
                    p.functions.push(Function {
                        id: v[1],
                        name: v[2] as i64,
                        system_name: v[3] as i64,
                        filename: v[4] as i64,
                        start_line: v[5] as i64,
                    });
                }
                6 => p.strings.push(
                    String::from_utf8(value.bytes()?.to_vec())
                        .map_err(|_| Error::format("a profile string is not UTF-8"))?,
                ),
                7 => p.drop_frames = value.int()? as i64,
                8 => p.keep_frames = value.int()? as i64,
                9 => p.time_nanos = value.int()? as i64,
                10 => p.duration_nanos = value.int()? as i64,
                11 => p.period_type = Some(value_type(value.bytes()?)?),
                12 => p.period = value.int()? as i64,
                13 => {
                    let mut c = Vec::new();
                    value.ints_into(&mut c)?;
                    p.comments.extend(c.into_iter().map(|v| v as i64));
                }
                14 => p.default_sample_type = value.int()? as i64,
                _ => {}
            }
        }
        p.check_strings()?;
        Ok(p)
    }

    fn check_strings(&self) -> Result<()> {
        if self.strings.first().map(String::as_str) != Some("") {
            return Err(Error::format(
                "not a pprof profile (its string table must start with \"\")",
            ));
        }
        let mut indices: Vec<i64> = vec![self.drop_frames, self.keep_frames];
        indices.push(self.default_sample_type);
        indices.extend(&self.comments);
        for t in self.sample_types.iter().chain(&self.period_type) {
            indices.extend([t.kind, t.unit]);
        }
        for l in self.samples.iter().flat_map(|s| &s.labels) {
            indices.extend([l.key, l.str, l.num_unit]);
        }
        for m in &self.mappings {
            indices.extend([m.filename, m.build_id]);
        }
        for f in &self.functions {
            indices.extend([f.name, f.system_name, f.filename]);
        }
        match indices
            .iter()
            .all(|&i| usize::try_from(i).is_ok_and(|i| i < self.strings.len()))
        {
            true => Ok(()),
            false => Err(Error::format(
                "corrupt pprof profile (a string index is out of range)",
            )),
        }
    }

    #[cfg(test)]
    pub fn string(&self, index: i64) -> &str {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.strings.get(i))
            .map_or("", String::as_str)
    }

    /// The file's bytes: the message in gzip, as pprof tools expect.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        gzip::wrap(&self.encode())
    }

    /// A profile file: gzip (of stored blocks) or the plain message.
    pub fn from_file_bytes(data: &[u8]) -> Result<Profile> {
        if gzip::is_gzip(data) {
            Profile::decode(&gzip::unwrap(data)?)
        } else {
            Profile::decode(data)
        }
    }

    /// Names the locations that have no lines yet, with `lookup(path,
    /// build ID, file offset)` of their mapping (`memleak symbolize`).
    /// Returns how many were named.
    pub fn name_locations(
        &mut self,
        mut lookup: impl FnMut(&str, Option<&str>, u64) -> Option<Vec<Frame>>,
    ) -> usize {
        let mut strings = Interner::from(std::mem::take(&mut self.strings));
        let mut functions = FunctionIds::default();
        for f in &self.functions {
            functions.insert(f.name, f.filename, f.id);
        }
        let mut next_function = self.functions.iter().map(|f| f.id).max().unwrap_or(0) + 1;
        let mut named = 0;
        for loc in self.locations.iter_mut().filter(|l| l.lines.is_empty()) {
            // Mappings are few (one per mapped file): a search is enough.
            let Some(m) = self.mappings.iter().find(|m| m.id == loc.mapping_id) else {
                continue;
            };
            let Some(offset) = (loc.address.checked_sub(m.memory_start))
                .and_then(|o| o.checked_add(m.file_offset))
            else {
                continue;
            };
            let path = strings.get(m.filename).to_string();
            let id = strings.get(m.build_id).to_string();
            let id = (!id.is_empty()).then_some(id.as_str());
            let Some(frames) = lookup(&path, id, offset) else {
                continue;
            };
            loc.lines = lines_of(
                frames.iter(),
                &mut strings,
                &mut self.functions,
                &mut functions,
                &mut next_function,
            );
            if !loc.lines.is_empty() {
                named += 1;
            }
        }
        self.strings = strings.strings;
        self.set_mapping_flags();
        named
    }

    /// A mapping's has_* flags say what its locations already carry, so
    /// that readers symbolize only what is not named yet.
    fn set_mapping_flags(&mut self) {
        let functions = &self.functions;
        // Ids are positions + 1 in profiles memleak writes; others are searched.
        let has_file = |id: u64| {
            let at = usize::try_from(id.wrapping_sub(1)).ok();
            at.and_then(|i| functions.get(i))
                .filter(|f| f.id == id)
                .or_else(|| functions.iter().find(|f| f.id == id))
                .is_some_and(|f| f.filename != 0)
        };
        for m in &mut self.mappings {
            let id = m.id;
            let locs = || {
                self.locations
                    .iter()
                    .filter(|l| l.mapping_id == id && !l.lines.is_empty())
            };
            m.has_functions = locs().next().is_some();
            m.has_inline_frames = m.has_functions;
            m.has_line_numbers = locs().flat_map(|l| &l.lines).any(|l| l.line > 0);
            m.has_filenames = locs()
                .flat_map(|l| &l.lines)
                .any(|l| has_file(l.function_id));
        }
    }
}

/// The lines of a location from its frames (innermost inlined first):
/// named frames only.
fn lines_of<'f>(
    frames: impl Iterator<Item = &'f Frame>,
    strings: &mut Interner,
    list: &mut Vec<Function>,
    by_key: &mut FunctionIds,
    next_id: &mut u64,
) -> Vec<Line> {
    frames
        .filter_map(|f| {
            let name = strings.index(f.symbol.as_deref()?);
            let (file, line) = match &f.source {
                Some((file, line)) => (strings.index(file), i64::from(*line)),
                None => (0, 0),
            };
            let function_id = by_key.get(name, file).unwrap_or_else(|| {
                let id = *next_id;
                *next_id += 1;
                list.push(Function {
                    id,
                    name,
                    system_name: name,
                    filename: file,
                    start_line: 0,
                });
                by_key.insert(name, file, id);
                id
            });
            Some(Line { function_id, line })
        })
        .collect()
}

/// Function ids by (name, file) string indices. Keyed like the report's
/// (pid, stack) maps, (u32, u64), so the binary carries one hash table
/// instantiation for both: a string table past 2^32 entries is not a
/// profile anything reads.
#[derive(Default)]
struct FunctionIds(HashMap<(u32, u64), usize>);

impl FunctionIds {
    fn get(&self, name: i64, file: i64) -> Option<u64> {
        self.0.get(&(name as u32, file as u64)).map(|&id| id as u64)
    }

    fn insert(&mut self, name: i64, file: i64, id: u64) {
        self.0.insert((name as u32, file as u64), id as usize);
    }
}

/// The string table, built as strings are used.
struct Interner {
    strings: Vec<String>,
    index: HashMap<String, i64>,
}

impl Interner {
    fn from(mut strings: Vec<String>) -> Interner {
        if strings.is_empty() {
            strings.push(String::new());
        }
        let index = strings
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as i64))
            .collect();
        Interner { strings, index }
    }

    fn index(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    fn get(&self, i: i64) -> &str {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.strings.get(i))
            .map_or("", String::as_str)
    }
}

/// The mapped file an address lies in: a line of /proc/PID/maps, or the
/// kernel as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedFile {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    pub path: String,
    pub build_id: Option<Vec<u8>>,
}

/// What a report adds to a profile besides its samples.
pub struct Meta<'a> {
    /// Wall clock time of the report.
    pub time_nanos: i64,
    /// How long allocations have been traced.
    pub duration_nanos: i64,
    /// -s: one allocation in this many was recorded.
    pub period: u64,
    /// The lines pprof shows above a report (command line, kernel, losses).
    pub comments: &'a [String],
}

/// Builds a profile stack by stack, each location and function once.
pub struct Builder {
    profile: Profile,
    strings: Interner,
    functions: FunctionIds,
    /// (process, mapping) of each mapping id - 1: a few dozen, searched.
    mappings: Vec<(u32, MappedFile)>,
    /// (process, address) -> location id.
    locations: HashMap<(u32, u64), usize>,
    /// Locations of stacks that could not be shown, by what they say.
    missing: Vec<(&'static str, u64)>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Builder {
        let mut strings = Interner::from(Vec::new());
        let count = ValueType {
            kind: strings.index("inuse_objects"),
            unit: strings.index("count"),
        };
        let space = ValueType {
            kind: strings.index("inuse_space"),
            unit: strings.index("bytes"),
        };
        let profile = Profile {
            sample_types: vec![count, space],
            default_sample_type: space.kind,
            period_type: Some(count),
            ..Profile::default()
        };
        Builder {
            profile,
            strings,
            functions: FunctionIds::default(),
            mappings: Vec::new(),
            locations: HashMap::new(),
            missing: Vec::new(),
        }
    }

    /// The location of return address `ip` in process `tgid` (0: the
    /// kernel); `describe` gives its mapping and frames the first time.
    pub fn location(
        &mut self,
        tgid: u32,
        ip: u64,
        describe: impl FnOnce() -> (Option<MappedFile>, Vec<Shown>),
    ) -> u64 {
        if let Some(&id) = self.locations.get(&(tgid, ip)) {
            return id as u64;
        }
        let (mapping, frames) = describe();
        let mapping_id = match mapping {
            Some(m) => self.mapping(tgid, m),
            None => 0,
        };
        let named: Vec<&Frame> = frames
            .iter()
            .filter_map(|f| match f {
                Shown::Frame(f) => Some(f),
                _ => None,
            })
            .collect();
        let mut next = self.profile.functions.len() as u64 + 1;
        let lines = lines_of(
            named.into_iter(),
            &mut self.strings,
            &mut self.profile.functions,
            &mut self.functions,
            &mut next,
        );
        let id = self.profile.locations.len() as u64 + 1;
        self.profile.locations.push(Location {
            id,
            mapping_id,
            address: ip,
            lines,
            is_folded: false,
        });
        self.locations.insert((tgid, ip), id as usize);
        id
    }

    /// A location standing for a stack that could not be recorded
    /// (`[stack lost]`): a function of that name, so totals still add up.
    pub fn missing(&mut self, what: &'static str) -> u64 {
        if let Some(&(_, id)) = self.missing.iter().find(|(w, _)| *w == what) {
            return id;
        }
        let name = self.strings.index(what);
        let function_id = self.profile.functions.len() as u64 + 1;
        self.profile.functions.push(Function {
            id: function_id,
            name,
            system_name: name,
            ..Function::default()
        });
        let id = self.profile.locations.len() as u64 + 1;
        self.profile.locations.push(Location {
            id,
            lines: vec![Line {
                function_id,
                line: 0,
            }],
            ..Location::default()
        });
        self.missing.push((what, id));
        id
    }

    fn mapping(&mut self, tgid: u32, m: MappedFile) -> u64 {
        if let Some(i) = self
            .mappings
            .iter()
            .position(|(t, k)| *t == tgid && *k == m)
        {
            return i as u64 + 1;
        }
        let id = self.profile.mappings.len() as u64 + 1;
        let build_id = match &m.build_id {
            Some(b) if !b.is_empty() => self.strings.index(&hex(b)),
            _ => 0,
        };
        self.profile.mappings.push(Mapping {
            id,
            memory_start: m.start,
            memory_limit: m.end,
            file_offset: m.offset,
            filename: self.strings.index(&m.path),
            build_id,
            ..Mapping::default()
        });
        self.mappings.push((tgid, m));
        id
    }

    /// A stack (leaf first) with its outstanding count and bytes; `pid`
    /// becomes a label when stacks of several processes are mixed.
    pub fn sample(&mut self, location_ids: Vec<u64>, count: u64, bytes: u64, pid: Option<u32>) {
        let labels = match pid {
            Some(pid) => vec![Label {
                key: self.strings.index("pid"),
                num: i64::from(pid),
                ..Label::default()
            }],
            None => Vec::new(),
        };
        self.profile.samples.push(Sample {
            location_ids,
            values: vec![count as i64, bytes as i64],
            labels,
        });
    }

    pub fn finish(mut self, meta: &Meta) -> Profile {
        self.profile.time_nanos = meta.time_nanos;
        self.profile.duration_nanos = meta.duration_nanos;
        self.profile.period = meta.period as i64;
        self.profile.comments = meta
            .comments
            .iter()
            .map(|c| self.strings.index(c))
            .collect();
        self.profile.strings = self.strings.strings;
        self.profile.set_mapping_flags();
        self.profile
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Replaces `path` with `data` so that a reader sees the old file or the
/// new one, never a part: written to `PATH.tmp-PID` in the same directory
/// (rename is atomic within a filesystem), flushed to disk, then renamed.
pub fn write_atomically(path: &str, data: &[u8]) -> Result<()> {
    let tmp = format!("{path}.tmp-{}", std::process::id());
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::output(format!("--pprof {path}"), e)
    })
}

/// The kernel's GNU build ID, from /sys/kernel/notes (its ELF notes).
pub fn kernel_build_id() -> Option<Vec<u8>> {
    let notes = std::fs::read("/sys/kernel/notes").ok()?;
    let word = |at: usize| -> Option<usize> {
        let b = notes.get(at..at + 4)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let mut pos = 0;
    while pos + 12 <= notes.len() {
        let (namesz, descsz, kind) = (word(pos)?, word(pos + 4)?, word(pos + 8)?);
        let name_at = pos + 12;
        let desc_at = name_at + namesz.div_ceil(4) * 4;
        const NT_GNU_BUILD_ID: usize = 3;
        if kind == NT_GNU_BUILD_ID && notes.get(name_at..name_at + namesz)? == b"GNU\0" {
            return Some(notes.get(desc_at..desc_at + descsz)?.to_vec());
        }
        pos = desc_at + descsz.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(symbol: &str, file: Option<(&str, u32)>, inlined: bool) -> Shown {
        Shown::Frame(Frame {
            symbol: Some(symbol.into()),
            offset: 4,
            module: Some("prog".into()),
            source: file.map(|(f, l)| (f.into(), l)),
            inlined,
        })
    }

    fn example(raw: bool) -> Profile {
        let mut b = Builder::new();
        let exe = MappedFile {
            start: 0x1000,
            end: 0x2000,
            offset: 0x1000,
            path: "/usr/bin/prog".into(),
            build_id: Some(vec![0xab, 0x01]),
        };
        let describe = |ip: u64| {
            let frames = match (raw, ip) {
                (true, _) => vec![Shown::Raw {
                    offset: ip,
                    build_id: None,
                    path: String::new(),
                }],
                (false, 0x1010) => vec![
                    frame("helper", Some(("/src/util.h", 40)), true),
                    frame("leak", Some(("/src/prog.c", 22)), false),
                ],
                (false, _) => vec![frame("main", Some(("/src/prog.c", 9)), false)],
            };
            (Some(exe.clone()), frames)
        };
        let leaf = b.location(7, 0x1010, || describe(0x1010));
        let main = b.location(7, 0x1100, || describe(0x1100));
        assert_eq!(b.location(7, 0x1010, || panic!("described once")), leaf);
        b.sample(vec![leaf, main], 3, 48, Some(7));
        let lost = b.missing("[stack lost]");
        b.sample(vec![lost], 1, 8, Some(7));
        b.finish(&Meta {
            time_nanos: 1_700_000_000_000_000_000,
            duration_nanos: 5_000_000_000,
            period: 1,
            comments: &["memleak -p 7".to_string()],
        })
    }

    #[test]
    fn builds_samples_locations_and_inlined_lines() {
        let p = example(false);
        assert_eq!(p.string(p.sample_types[1].kind), "inuse_space");
        assert_eq!(p.string(p.default_sample_type), "inuse_space");
        assert_eq!(p.samples[0].values, [3, 48]);
        assert_eq!(p.string(p.samples[0].labels[0].key), "pid");
        let leaf = &p.locations[0];
        assert_eq!((leaf.address, leaf.mapping_id), (0x1010, 1));
        let names: Vec<(&str, i64)> = leaf
            .lines
            .iter()
            .map(|l| {
                (
                    p.string(p.functions[l.function_id as usize - 1].name),
                    l.line,
                )
            })
            .collect();
        assert_eq!(names, [("helper", 40), ("leak", 22)], "inlined first");
        let m = &p.mappings[0];
        assert_eq!(p.string(m.filename), "/usr/bin/prog");
        assert_eq!(p.string(m.build_id), "ab01");
        assert!(m.has_functions && m.has_line_numbers && m.has_filenames);
        assert_eq!(p.string(p.comments[0]), "memleak -p 7");
        // The lost stack has a function of its own and no mapping.
        let lost = &p.locations[p.samples[1].location_ids[0] as usize - 1];
        assert_eq!(lost.mapping_id, 0);
        assert_eq!(
            p.string(p.functions[lost.lines[0].function_id as usize - 1].name),
            "[stack lost]"
        );
    }

    #[test]
    fn encodes_and_decodes_the_same_profile() {
        for raw in [false, true] {
            let p = example(raw);
            let bytes = p.to_file_bytes();
            assert!(gzip::is_gzip(&bytes));
            assert_eq!(Profile::from_file_bytes(&bytes).unwrap(), p);
            assert_eq!(Profile::from_file_bytes(&p.encode()).unwrap(), p);
        }
        assert!(Profile::decode(b"")
            .unwrap_err()
            .to_string()
            .contains("not a pprof profile"));
        let mut bad = example(false);
        bad.functions[0].name = 999;
        assert!(Profile::decode(&bad.encode())
            .unwrap_err()
            .to_string()
            .contains("out of range"));
    }

    /// A raw profile named afterwards equals the one named while tracing.
    #[test]
    fn names_raw_locations_from_their_mappings() {
        let named = example(false);
        let mut raw = example(true);
        assert!(!raw.mappings[0].has_functions);
        let mut asked = Vec::new();
        let n = raw.name_locations(|path, id, offset| {
            asked.push((path.to_string(), id.map(str::to_string), offset));
            let frames = match offset {
                0x1010 => vec![
                    frame("helper", Some(("/src/util.h", 40)), true),
                    frame("leak", Some(("/src/prog.c", 22)), false),
                ],
                _ => vec![frame("main", Some(("/src/prog.c", 9)), false)],
            };
            Some(
                frames
                    .into_iter()
                    .filter_map(|f| match f {
                        Shown::Frame(f) => Some(f),
                        _ => None,
                    })
                    .collect(),
            )
        });
        assert_eq!(n, 2);
        assert_eq!(
            asked[0],
            (
                "/usr/bin/prog".to_string(),
                Some("ab01".to_string()),
                0x1010
            )
        );
        let text = |p: &Profile| -> Vec<Vec<(String, i64)>> {
            p.samples
                .iter()
                .flat_map(|s| &s.location_ids)
                .map(|&id| {
                    let loc = p.locations.iter().find(|l| l.id == id).unwrap();
                    loc.lines
                        .iter()
                        .map(|l| {
                            let f = p.functions.iter().find(|f| f.id == l.function_id).unwrap();
                            (
                                format!("{} {}", p.string(f.name), p.string(f.filename)),
                                l.line,
                            )
                        })
                        .collect()
                })
                .collect()
        };
        assert_eq!(text(&raw), text(&named));
        assert!(raw.mappings[0].has_functions && raw.mappings[0].has_line_numbers);
    }

    #[test]
    fn replaces_files_atomically() {
        let dir = std::env::temp_dir().join(format!("memleak-pprof-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.pb.gz").display().to_string();
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temp left");
        let err = write_atomically(&dir.join("no/such").display().to_string(), b"x").unwrap_err();
        assert!(matches!(err, Error::Output { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("cannot write --pprof "),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kernel_build_id_when_the_kernel_has_one() {
        if std::path::Path::new("/sys/kernel/notes").exists() {
            let id = kernel_build_id().expect("a GNU build ID note");
            assert!(id.len() >= 16, "{id:?}");
        }
    }
}
