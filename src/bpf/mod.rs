//! The raw FFI to libbpf behind a small safe API: open the embedded object,
//! set its read-only config, load, attach uprobes as bpf_links, read maps in
//! batches, poll the ring buffer. `unsafe` stays in this module; it knows
//! nothing of what the numbers mean.
//!
//! Two rules make the API safe to use:
//! - Maps are typed handles ([`Map`], [`PerCpuMap`], [`StackMap`],
//!   [`RingBufMap`]) made by [`Object::map_fd`], which checks the map's key
//!   and value sizes (and kind: per-CPU or not) against the Rust types: a
//!   disagreement between bpf/memleak.h and abi.rs is an error there, never
//!   a kernel write past a Rust value.
//! - Every map, link and ring buffer holds a share of its object
//!   ([`ObjectHandle`]): the object is closed only when the last of them
//!   goes, so none outlives it, whatever order they are dropped in.

pub mod abi;
pub mod programs;

#[cfg(test)]
mod object_tests;

use std::ffi::{c_char, c_int, c_void, CString};
use std::io;
use std::marker::PhantomData;
use std::mem::size_of;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::{Error, Result};

use libbpf_sys as sys;

use abi::Pod;

/// The BPF programs, compiled by build.rs for the target's architecture:
/// their length (u32, little endian), then the object zlib-compressed.
static OBJECT_Z: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/memleak.bpf.o.z"));

// zlib's one-shot inflate, from the zlib that libbpf-sys builds and links.
extern "C" {
    fn uncompress(
        dest: *mut u8,
        dest_len: *mut std::ffi::c_ulong,
        source: *const u8,
        source_len: std::ffi::c_ulong,
    ) -> c_int;
}

/// The embedded BPF object, inflated.
pub fn object_bytes() -> Result<Vec<u8>> {
    let corrupt = || Error::other("the embedded BPF object is corrupt");
    let (len, z) = OBJECT_Z.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let len = u32::from_le_bytes(*len) as usize;
    let mut out = vec![0u8; len];
    let mut out_len = len as std::ffi::c_ulong;
    // SAFETY: `out` has room for `out_len` bytes and `z` is a live slice of
    // `z.len()` bytes; uncompress writes at most `out_len` bytes and stores
    // how many it wrote.
    let rc = unsafe {
        uncompress(
            out.as_mut_ptr(),
            &mut out_len,
            z.as_ptr(),
            z.len() as std::ffi::c_ulong,
        )
    };
    if rc != 0 || out_len as usize != len {
        return Err(corrupt());
    }
    Ok(out)
}

/// libbpf prints its own warnings to stderr; without -v the tool reports
/// failures itself in one line, so libbpf stays quiet.
pub fn set_libbpf_verbose(verbose: bool) {
    unsafe extern "C" fn silent(
        _: sys::libbpf_print_level,
        _: *const c_char,
        _: *mut sys::__va_list_tag,
    ) -> c_int {
        0
    }
    if !verbose {
        // SAFETY: `silent` matches libbpf_print_fn_t and never touches its args.
        unsafe { sys::libbpf_set_print(Some(silent)) };
    }
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Other(format!("{s:?} contains a NUL byte")))
}

/// libbpf returns -errno and also sets errno; prefer the return value.
fn errno_from(ret: c_int) -> io::Error {
    if ret < 0 {
        io::Error::from_raw_os_error(-ret)
    } else {
        io::Error::last_os_error()
    }
}

/// Whether the kernel has uprobe_multi links (Linux 6.6+) that filter by
/// process. libbpf's own probe, done here because libbpf does not export
/// it: creating a link on the path "/" fails with EBADF where the attach
/// type exists, and with pid -1 fails with EINVAL only where the first
/// kernels' filtering by thread instead of by process was fixed (with it,
/// only the thread named by -p would be traced). No probe is installed.
pub fn probe_uprobe_multi() -> bool {
    // r0 = 0; exit
    // SAFETY: bpf_insn is plain data; zero is a valid value.
    let mut insns: [sys::bpf_insn; 2] = unsafe { std::mem::zeroed() };
    insns[0].code = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    insns[1].code = 0x95; // BPF_JMP | BPF_EXIT
                          // SAFETY: plain data; zeroed is a valid start, sz set below.
    let mut opts: sys::bpf_prog_load_opts = unsafe { std::mem::zeroed() };
    opts.sz = size_of::<sys::bpf_prog_load_opts>() as sys::size_t;
    opts.expected_attach_type = sys::BPF_TRACE_UPROBE_MULTI;
    // SAFETY: insns, license and opts outlive the call.
    let prog = unsafe {
        sys::bpf_prog_load(
            sys::BPF_PROG_TYPE_KPROBE,
            std::ptr::null(),
            c"GPL".as_ptr(),
            insns.as_ptr(),
            2,
            &mut opts,
        )
    };
    if prog < 0 {
        return false;
    }
    let link_error = |pid: u32| -> i32 {
        let offset: std::ffi::c_ulong = 0;
        // SAFETY: plain data; zeroed is a valid start.
        let mut link: sys::bpf_link_create_opts = unsafe { std::mem::zeroed() };
        link.sz = size_of::<sys::bpf_link_create_opts>() as sys::size_t;
        link.__bindgen_anon_1.uprobe_multi.path = c"/".as_ptr();
        link.__bindgen_anon_1.uprobe_multi.offsets = &offset;
        link.__bindgen_anon_1.uprobe_multi.cnt = 1;
        link.__bindgen_anon_1.uprobe_multi.pid = pid;
        // SAFETY: prog is our program; path and offset outlive the call.
        let fd = unsafe { sys::bpf_link_create(prog, -1, sys::BPF_TRACE_UPROBE_MULTI, &link) };
        if fd >= 0 {
            // SAFETY: our own descriptor.
            unsafe { libc::close(fd) };
            return 0;
        }
        -fd
    };
    let ok = link_error(0) == libc::EBADF && link_error(u32::MAX) == libc::EINVAL;
    // SAFETY: our own descriptor.
    unsafe { libc::close(prog) };
    ok
}

/// The libbpf object itself, closed when its last owner goes: the
/// [`Object`], and every map, link and ring buffer made from it.
struct ObjectHandle {
    ptr: NonNull<sys::bpf_object>,
}

// SAFETY: only `Object` (neither Send nor Sync) calls libbpf with the
// pointer; maps, links and ring buffers hold the handle only to keep the
// object open. Dropping the last handle, on whatever thread, closes it: by
// then nothing else can reach the object.
unsafe impl Send for ObjectHandle {}
// SAFETY: as for Send: a shared handle gives no access to the object.
unsafe impl Sync for ObjectHandle {}

impl Drop for ObjectHandle {
    fn drop(&mut self) {
        // SAFETY: the last owner: no map, link or ring buffer of the object
        // is left.
        unsafe { sys::bpf_object__close(self.ptr.as_ptr()) };
    }
}

/// An opened (and later loaded) BPF object. Maps, links and ring buffers
/// made from it keep it open (see [`ObjectHandle`]).
pub struct Object {
    handle: Arc<ObjectHandle>,
    /// libbpf objects are not thread-safe: this one stays on its thread.
    _not_send: PhantomData<*mut ()>,
}

impl Object {
    pub fn open() -> Result<Object> {
        let name = cstring("memleak")?;
        let opts = sys::bpf_object_open_opts {
            sz: size_of::<sys::bpf_object_open_opts>() as sys::size_t,
            object_name: name.as_ptr(),
            ..Default::default()
        };
        let object = object_bytes()?;
        // SAFETY: `object` lives until after the call; libbpf copies what it
        // keeps of the buffer.
        let ptr = unsafe {
            sys::bpf_object__open_mem(object.as_ptr().cast(), object.len() as sys::size_t, &opts)
        };
        NonNull::new(ptr)
            .map(|ptr| Object {
                handle: Arc::new(ObjectHandle { ptr }),
                _not_send: PhantomData,
            })
            .ok_or_else(|| {
                Error::bpf_io(
                    "cannot open the embedded BPF object",
                    io::Error::last_os_error(),
                )
            })
    }

    fn ptr(&self) -> *mut sys::bpf_object {
        self.handle.ptr.as_ptr()
    }

    /// A link libbpf just returned (NULL: failed, errno set), as a [`Link`]
    /// that keeps this object open.
    fn link(&self, ptr: *mut sys::bpf_link) -> Result<Link, io::Error> {
        let error = io::Error::last_os_error();
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Link {
                ptr,
                _object: Arc::clone(&self.handle),
            }),
            None => Err(error),
        }
    }

    fn map(&self, name: &str) -> Result<*mut sys::bpf_map> {
        let cname = cstring(name)?;
        // SAFETY: valid object pointer and NUL-terminated name.
        let map = unsafe { sys::bpf_object__find_map_by_name(self.ptr(), cname.as_ptr()) };
        if map.is_null() {
            Err(Error::Other(format!("BPF object has no map {name}")))
        } else {
            Ok(map)
        }
    }

    fn program(&self, name: &str) -> Result<*mut sys::bpf_program> {
        let cname = cstring(name)?;
        // SAFETY: valid object pointer and NUL-terminated name.
        let prog = unsafe { sys::bpf_object__find_program_by_name(self.ptr(), cname.as_ptr()) };
        if prog.is_null() {
            Err(Error::Other(format!("BPF object has no program {name}")))
        } else {
            Ok(prog)
        }
    }

    /// Writes the read-only config (`const volatile struct config cfg`, the
    /// only variable in .rodata) before load.
    pub fn set_config(&mut self, cfg: &abi::Config) -> Result<()> {
        let map = self.map(".rodata")?;
        let mut size: sys::size_t = 0;
        // SAFETY: map belongs to this object; libbpf returns its mmaped
        // initial value and its size.
        let data = unsafe { sys::bpf_map__initial_value(map, &mut size) };
        if data.is_null() || size as usize != size_of::<abi::Config>() {
            return Err(Error::Other(format!(
                "BPF .rodata is {size} bytes, expected {}: bpf/memleak.h and src/bpf/abi.rs disagree",
                size_of::<abi::Config>()
            )));
        }
        // SAFETY: data points to `size` writable bytes, checked above.
        unsafe { std::ptr::write_unaligned(data.cast::<abi::Config>(), *cfg) };
        Ok(())
    }

    pub fn set_max_entries(&mut self, map: &str, entries: u32) -> Result<()> {
        let m = self.map(map)?;
        // SAFETY: valid map of an unloaded object.
        let ret = unsafe { sys::bpf_map__set_max_entries(m, entries) };
        if ret < 0 {
            return Err(Error::bpf_io(
                format!("cannot size map {map}"),
                errno_from(ret),
            ));
        }
        Ok(())
    }

    pub fn set_map_flags(&mut self, map: &str, flags: u32) -> Result<()> {
        let m = self.map(map)?;
        // SAFETY: valid map of an unloaded object.
        let ret = unsafe { sys::bpf_map__set_map_flags(m, flags) };
        if ret < 0 {
            return Err(Error::bpf_io(
                format!("cannot set flags of map {map}"),
                errno_from(ret),
            ));
        }
        Ok(())
    }

    /// Programs not needed for this run are not loaded (kernel programs in
    /// user mode and the reverse).
    pub fn set_autoload(&mut self, prog: &str, load: bool) -> Result<()> {
        let p = self.program(prog)?;
        // SAFETY: valid program of an unloaded object.
        let ret = unsafe { sys::bpf_program__set_autoload(p, load) };
        if ret < 0 {
            return Err(Error::bpf_io(
                format!("cannot set autoload of {prog}"),
                errno_from(ret),
            ));
        }
        Ok(())
    }

    pub fn load(&mut self) -> Result<(), io::Error> {
        // SAFETY: valid object pointer.
        let ret = unsafe { sys::bpf_object__load(self.ptr()) };
        if ret < 0 {
            return Err(errno_from(ret));
        }
        Ok(())
    }

    /// The shape libbpf gives map `name` (known once the object is opened).
    pub fn map_layout(&self, name: &str) -> Result<MapLayout> {
        let m = self.map(name)?;
        // SAFETY: m is a map of this object, alive as long as it.
        Ok(unsafe {
            MapLayout {
                map_type: sys::bpf_map__type(m),
                key_size: sys::bpf_map__key_size(m),
                value_size: sys::bpf_map__value_size(m),
            }
        })
    }

    /// Loaded map `name` as a typed handle ([`Map`], [`PerCpuMap`],
    /// [`StackMap`], [`RingBufMap`]): an error if its kind or key and
    /// value sizes differ from the handle's types.
    pub fn map_fd<M: FromMap>(&self, name: &str) -> Result<M> {
        let m = self.map(name)?;
        // SAFETY: valid map.
        let fd = unsafe { sys::bpf_map__fd(m) };
        if fd < 0 {
            return Err(Error::Other(format!("map {name} is not loaded")));
        }
        M::from_map(UntypedMap {
            name: name.to_string(),
            fd,
            layout: self.map_layout(name)?,
            object: Arc::clone(&self.handle),
        })
    }

    /// Attaches `prog` at `offset` in the file at `path`, for process `pid`
    /// only (-1: any). libbpf uses perf_event_open's uprobe PMU when the
    /// kernel has it, so nothing is written to tracefs and the probe goes
    /// away with the link's file descriptor, even if memleak is killed.
    pub fn attach_uprobe(
        &self,
        prog: &str,
        pid: i32,
        path: &str,
        offset: u64,
        retprobe: bool,
    ) -> Result<Link, io::Error> {
        let p = self.program(prog).map_err(io::Error::other)?;
        let cpath = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let opts = sys::bpf_uprobe_opts {
            sz: size_of::<sys::bpf_uprobe_opts>() as sys::size_t,
            retprobe,
            ..Default::default()
        };
        // SAFETY: valid loaded program; path and opts outlive the call.
        let link = unsafe {
            sys::bpf_program__attach_uprobe_opts(
                p,
                pid,
                cpath.as_ptr(),
                offset as sys::size_t,
                &opts,
            )
        };
        self.link(link)
    }

    /// Attaches `prog` at every `(offset, cookie)` in the file at `path` with
    /// one uprobe_multi link (Linux 6.6+), for process `pid` only.
    pub fn attach_uprobe_multi(
        &self,
        prog: &str,
        pid: i32,
        path: &str,
        sites: &[(u64, u64)],
        retprobe: bool,
    ) -> Result<Link, io::Error> {
        let p = self.program(prog).map_err(io::Error::other)?;
        let cpath = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let offsets: Vec<std::ffi::c_ulong> =
            sites.iter().map(|&(o, _)| o as std::ffi::c_ulong).collect();
        let cookies: Vec<u64> = sites.iter().map(|&(_, c)| c).collect();
        let opts = sys::bpf_uprobe_multi_opts {
            sz: size_of::<sys::bpf_uprobe_multi_opts>() as sys::size_t,
            offsets: offsets.as_ptr(),
            cookies: cookies.as_ptr(),
            cnt: sites.len() as sys::size_t,
            retprobe,
            ..Default::default()
        };
        // SAFETY: valid loaded program; path, offsets and cookies outlive
        // the call (the kernel copies them).
        let link = unsafe {
            sys::bpf_program__attach_uprobe_multi(p, pid, cpath.as_ptr(), std::ptr::null(), &opts)
        };
        self.link(link)
    }

    /// Attaches a raw tracepoint program by tracepoint name (no tracefs).
    pub fn attach_raw_tracepoint(&self, prog: &str, name: &str) -> Result<Link, io::Error> {
        let p = self.program(prog).map_err(io::Error::other)?;
        let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: valid loaded program; the name outlives the call.
        let link = unsafe { sys::bpf_program__attach_raw_tracepoint(p, cname.as_ptr()) };
        self.link(link)
    }

    /// Attaches a tp_btf program to the tracepoint its section names.
    pub fn attach_tp_btf(&self, prog: &str) -> Result<Link, io::Error> {
        let p = self.program(prog).map_err(io::Error::other)?;
        // SAFETY: valid loaded program.
        let link = unsafe { sys::bpf_program__attach_trace(p) };
        self.link(link)
    }

    /// Attaches a tracepoint program to the tracepoint with perf event id
    /// `id` (from tracefs `events/<category>/<name>/id`). Opening the perf
    /// event ourselves means tracefs is looked up in one place: ours.
    pub fn attach_tracepoint(&self, prog: &str, id: u64) -> Result<Link, io::Error> {
        let p = self.program(prog).map_err(io::Error::other)?;
        // SAFETY: perf_event_attr is plain data; zeroed is a valid start.
        let mut attr: sys::perf_event_attr = unsafe { std::mem::zeroed() };
        attr.type_ = sys::PERF_TYPE_TRACEPOINT;
        attr.size = size_of::<sys::perf_event_attr>() as u32;
        attr.config = id;
        // SAFETY: plain syscall. As libbpf does: pid -1 and cpu 0, because
        // a BPF program on a tracepoint runs for every task on every CPU
        // whatever the perf event was opened for.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const sys::perf_event_attr,
                -1 as c_int,
                0 as c_int,
                -1 as c_int,
                sys::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = fd as c_int;
        // SAFETY: valid loaded program and perf event fd; on success the
        // link owns the fd.
        let link = unsafe { sys::bpf_program__attach_perf_event(p, fd) };
        let link = self.link(link);
        if link.is_err() {
            // SAFETY: the fd is ours when attaching failed.
            unsafe { libc::close(fd) };
        }
        link
    }

    /// Every program in the object: its name and its section (what it
    /// attaches to).
    pub fn programs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let text = |s: *const c_char| {
            (!s.is_null()).then(|| {
                // SAFETY: a non-null name from libbpf: NUL-terminated, and
                // alive as long as the object.
                unsafe { std::ffi::CStr::from_ptr(s) }
                    .to_string_lossy()
                    .into_owned()
            })
        };
        let mut prog = std::ptr::null_mut();
        loop {
            // SAFETY: valid object; `prog` is null or one of its programs.
            prog = unsafe { sys::bpf_object__next_program(self.ptr(), prog) };
            if prog.is_null() {
                return out;
            }
            // SAFETY: `prog` is a program of this object.
            let (name, section) = unsafe {
                (
                    text(sys::bpf_program__name(prog)),
                    text(sys::bpf_program__section_name(prog)),
                )
            };
            out.push((name.unwrap_or_default(), section.unwrap_or_default()));
        }
    }

    /// Struct `name` in the object's own BTF (as bpf/memleak.h compiled):
    /// its size and members, as [`KernelBtf::struct_members`].
    pub fn btf_struct(&self, name: &str) -> Option<(u32, Vec<StructMember>)> {
        // SAFETY: valid object; its BTF lives as long as it (and is not
        // ours to free: ManuallyDrop).
        let btf = NonNull::new(unsafe { sys::bpf_object__btf(self.ptr()) })?;
        let btf = std::mem::ManuallyDrop::new(KernelBtf { ptr: btf });
        Some((btf.struct_size(name)?, btf.struct_members(name)?))
    }

    /// Enum `name` in the object's own BTF: its enumerators and values.
    pub fn btf_enum(&self, name: &str) -> Option<Vec<(String, i64)>> {
        // SAFETY: as in btf_struct.
        let btf = NonNull::new(unsafe { sys::bpf_object__btf(self.ptr()) })?;
        std::mem::ManuallyDrop::new(KernelBtf { ptr: btf }).enum_values(name)
    }

    /// Recursion misses of a loaded program: runs the kernel skipped because
    /// another BPF program was already running on that CPU.
    pub fn recursion_misses(&self, prog: &str) -> u64 {
        let Ok(p) = self.program(prog) else { return 0 };
        // SAFETY: valid program; info is a plain struct the kernel fills.
        unsafe {
            let fd = sys::bpf_program__fd(p);
            if fd < 0 {
                return 0;
            }
            let mut info: sys::bpf_prog_info = std::mem::zeroed();
            let mut len = size_of::<sys::bpf_prog_info>() as u32;
            if sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) < 0 {
                return 0;
            }
            info.recursion_misses
        }
    }
}

/// One attachment. Dropping it detaches the program.
pub struct Link {
    ptr: NonNull<sys::bpf_link>,
    /// Destroyed before this (fields drop after `drop`).
    _object: Arc<ObjectHandle>,
}

// SAFETY: a bpf_link is its own allocation and file descriptor; libbpf keeps
// no shared state between links, so one may be destroyed on another thread
// as long as only that thread holds it (which ownership guarantees).
unsafe impl Send for Link {}

impl Drop for Link {
    fn drop(&mut self) {
        // SAFETY: we own the link.
        unsafe { sys::bpf_link__destroy(self.ptr.as_ptr()) };
    }
}

/// What the kernel knows of a map's shape: its type (BPF_MAP_TYPE_*) and
/// its key and value sizes in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLayout {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
}

/// The kinds of map a typed handle reads differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// One value per key (hash, array, ...).
    Plain,
    /// One value per possible CPU for each key: a lookup writes them all.
    PerCpu,
    /// A ring buffer: no keys or values, records.
    RingBuf,
}

impl MapLayout {
    pub fn kind(&self) -> MapKind {
        match self.map_type {
            sys::BPF_MAP_TYPE_PERCPU_HASH
            | sys::BPF_MAP_TYPE_PERCPU_ARRAY
            | sys::BPF_MAP_TYPE_LRU_PERCPU_HASH
            | sys::BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE => MapKind::PerCpu,
            sys::BPF_MAP_TYPE_RINGBUF => MapKind::RingBuf,
            _ => MapKind::Plain,
        }
    }

    /// Whether map `name` may be read and written as `kind` with keys of
    /// `key_size` and values of `value_size` bytes; the error says how it
    /// differs (bpf/memleak.h and src/bpf/abi.rs disagree).
    pub fn check(
        &self,
        name: &str,
        kind: MapKind,
        key_size: usize,
        value_size: usize,
    ) -> Result<(), Error> {
        let mismatch = |what: String| {
            Error::bpf(
                format!("map {name}: {what}: bpf/memleak.h and src/bpf/abi.rs disagree"),
                libc::EINVAL,
            )
        };
        if self.kind() != kind {
            return Err(mismatch(format!(
                "is a {:?} map (type {}), read as {kind:?}",
                self.kind(),
                self.map_type
            )));
        }
        if kind == MapKind::RingBuf {
            return Ok(());
        }
        if self.key_size as usize != key_size || self.value_size as usize != value_size {
            return Err(mismatch(format!(
                "key and value are {} and {} bytes, read as {key_size} and {value_size}",
                self.key_size, self.value_size
            )));
        }
        Ok(())
    }
}

/// A loaded map of the object, before its handle is typed.
pub struct UntypedMap {
    name: String,
    fd: c_int,
    layout: MapLayout,
    object: Arc<ObjectHandle>,
}

/// A typed handle on a loaded map, made from an [`UntypedMap`] once its
/// layout is checked.
pub trait FromMap: Sized {
    fn from_map(map: UntypedMap) -> Result<Self, Error>;
}

/// The file descriptor of a loaded map, with a share of its object (which
/// owns the descriptor) so that it stays open as long as this.
#[derive(Clone)]
struct MapFd {
    fd: c_int,
    _object: Arc<ObjectHandle>,
}

impl MapFd {
    fn checked(map: UntypedMap, kind: MapKind, key: usize, value: usize) -> Result<MapFd, Error> {
        map.layout.check(&map.name, kind, key, value)?;
        Ok(MapFd {
            fd: map.fd,
            _object: map.object,
        })
    }
}

/// A map with one value per key, keys `K` and values `V` of the map's key
/// and value sizes (checked when made).
pub struct Map<K: Pod, V: Pod> {
    map: MapFd,
    _types: PhantomData<(K, V)>,
}

impl<K: Pod, V: Pod> FromMap for Map<K, V> {
    fn from_map(map: UntypedMap) -> Result<Self, Error> {
        Ok(Map {
            map: MapFd::checked(map, MapKind::Plain, size_of::<K>(), size_of::<V>())?,
            _types: PhantomData,
        })
    }
}

impl<K: Pod, V: Pod> Map<K, V> {
    fn fd(&self) -> c_int {
        self.map.fd
    }

    pub fn lookup(&self, key: &K) -> Option<V> {
        let mut value = V::default();
        // SAFETY: key and value are Pod of the map's key and value sizes
        // (checked when the handle was made).
        let ret = unsafe {
            sys::bpf_map_lookup_elem(
                self.fd(),
                (key as *const K).cast(),
                (&mut value as *mut V).cast(),
            )
        };
        (ret == 0).then_some(value)
    }

    /// Inserts or replaces one entry.
    pub fn update(&self, key: &K, value: &V) -> Result<(), io::Error> {
        // SAFETY: key and value are Pod of the map's key and value sizes.
        let ret = unsafe {
            sys::bpf_map_update_elem(
                self.fd(),
                (key as *const K).cast(),
                (value as *const V).cast(),
                0,
            )
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(-ret))
        }
    }

    /// Writes `values` at `keys` in one system call (Linux 5.6+); on a
    /// kernel without batch updates, one call each.
    pub fn update_batch(&self, keys: &[K], values: &[V]) -> Result<(), io::Error> {
        if keys.len() != values.len() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        if keys.is_empty() {
            return Ok(());
        }
        let mut count =
            u32::try_from(keys.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let opts = sys::bpf_map_batch_opts {
            sz: size_of::<sys::bpf_map_batch_opts>() as sys::size_t,
            ..Default::default()
        };
        // SAFETY: keys and values are `count` Pod elements of the map's key
        // and value sizes; opts outlives the call.
        let ret = unsafe {
            sys::bpf_map_update_batch(
                self.fd(),
                keys.as_ptr().cast(),
                values.as_ptr().cast(),
                &mut count,
                &opts,
            )
        };
        if ret == 0 {
            return Ok(());
        }
        for (key, value) in keys.iter().zip(values) {
            self.update(key, value)?;
        }
        Ok(())
    }

    /// Deletes one entry; false if it was not there.
    pub fn delete(&self, key: &K) -> bool {
        // SAFETY: key is Pod of the map's key size.
        unsafe { sys::bpf_map_delete_elem(self.fd(), (key as *const K).cast()) == 0 }
    }

    /// Every entry of a hash map, read in batches (one syscall per `chunk`
    /// entries); falls back to key-by-key iteration on kernels without
    /// batch support.
    pub fn dump(&self, mut visit: impl FnMut(&K, &V)) -> Result<(), io::Error> {
        const CHUNK: usize = 16384;
        let mut keys = vec![K::default(); CHUNK];
        let mut values = vec![V::default(); CHUNK];
        // The batch token is opaque: a bucket index (u32) for hash maps, a
        // key for arrays. Room for either, 8-byte aligned.
        let mut token = vec![0u64; size_of::<K>().div_ceil(8).max(1)];
        let mut first = true;
        loop {
            let mut count = CHUNK as u32;
            let opts = sys::bpf_map_batch_opts {
                sz: size_of::<sys::bpf_map_batch_opts>() as sys::size_t,
                ..Default::default()
            };
            let in_batch: *mut c_void = if first {
                std::ptr::null_mut()
            } else {
                token.as_mut_ptr().cast()
            };
            // SAFETY: keys/values hold CHUNK Pod entries of the map's key
            // and value sizes; the token has room for a u32 and for a key.
            let ret = unsafe {
                sys::bpf_map_lookup_batch(
                    self.fd(),
                    in_batch,
                    token.as_mut_ptr().cast(),
                    keys.as_mut_ptr().cast(),
                    values.as_mut_ptr().cast(),
                    &mut count,
                    &opts,
                )
            };
            let err = if ret < 0 { Some(errno_from(ret)) } else { None };
            for i in 0..(count as usize).min(CHUNK) {
                visit(&keys[i], &values[i]);
            }
            match err {
                None => first = false,
                Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Some(e)
                    if first
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(524)
                        ) =>
                {
                    return self.dump_by_key(visit);
                }
                Some(e) => return Err(e),
            }
        }
    }

    fn dump_by_key(&self, mut visit: impl FnMut(&K, &V)) -> Result<(), io::Error> {
        let mut key = K::default();
        let mut next = K::default();
        let mut first = true;
        loop {
            let prev: *const c_void = if first {
                std::ptr::null()
            } else {
                (&key as *const K).cast()
            };
            // SAFETY: Pod keys of the map's key size.
            let ret =
                unsafe { sys::bpf_map_get_next_key(self.fd(), prev, (&mut next as *mut K).cast()) };
            if ret < 0 {
                let e = errno_from(ret);
                return if e.raw_os_error() == Some(libc::ENOENT) {
                    Ok(())
                } else {
                    Err(e)
                };
            }
            first = false;
            key = next;
            if let Some(value) = self.lookup(&key) {
                visit(&key, &value);
            }
        }
    }
}

/// A per-CPU map: each key has one `V` per possible CPU (checked when
/// made).
pub struct PerCpuMap<K: Pod, V: Pod> {
    map: MapFd,
    _types: PhantomData<(K, V)>,
}

impl<K: Pod, V: Pod> FromMap for PerCpuMap<K, V> {
    fn from_map(map: UntypedMap) -> Result<Self, Error> {
        Ok(PerCpuMap {
            map: MapFd::checked(map, MapKind::PerCpu, size_of::<K>(), size_of::<V>())?,
            _types: PhantomData,
        })
    }
}

impl<K: Pod, V: Pod> PerCpuMap<K, V> {
    /// The value of `key` on each possible CPU; empty if it cannot be read.
    pub fn lookup(&self, key: &K) -> Vec<V> {
        // The kernel hands each CPU's value in a slot rounded up to 8 bytes.
        let slot = size_of::<V>().next_multiple_of(8);
        // SAFETY: plain libbpf call (it reads a sysfs file once).
        let Ok(ncpus) = usize::try_from(unsafe { sys::libbpf_num_possible_cpus() }) else {
            return Vec::new();
        };
        let mut buf = vec![0u64; slot / 8 * ncpus];
        // SAFETY: key is Pod of the map's key size; buf holds `ncpus` slots
        // of the map's value size rounded up to 8, all the kernel writes.
        let ret = unsafe {
            sys::bpf_map_lookup_elem(
                self.map.fd,
                (key as *const K).cast(),
                buf.as_mut_ptr().cast(),
            )
        };
        if ret != 0 {
            return Vec::new();
        }
        // SAFETY: u64s are plain bytes; the slice covers buf exactly.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), buf.len() * 8) };
        bytes
            .chunks_exact(slot)
            .filter_map(|chunk| read_pod(chunk))
            .collect()
    }
}

/// The `stacks` map: stack id (u64) to MAX_STACK_DEPTH addresses.
pub struct StackMap {
    map: MapFd,
}

impl FromMap for StackMap {
    fn from_map(map: UntypedMap) -> Result<Self, Error> {
        Ok(StackMap {
            map: MapFd::checked(
                map,
                MapKind::Plain,
                size_of::<u64>(),
                size_of::<[u64; abi::MAX_STACK_DEPTH]>(),
            )?,
        })
    }
}

impl StackMap {
    /// Reads a stack of up to MAX_STACK_DEPTH addresses; the list ends at
    /// the first zero.
    pub fn lookup_stack(&self, id: u64) -> Option<Vec<u64>> {
        let mut ips = [0u64; abi::MAX_STACK_DEPTH];
        // SAFETY: the map's key is a u64 and its value MAX_STACK_DEPTH u64s
        // (checked when the handle was made).
        let ret = unsafe {
            sys::bpf_map_lookup_elem(
                self.map.fd,
                (&id as *const u64).cast(),
                ips.as_mut_ptr().cast(),
            )
        };
        if ret != 0 {
            return None;
        }
        Some(ips.iter().copied().take_while(|&ip| ip != 0).collect())
    }
}

/// A ring buffer map, for [`RingBuffer::new`].
pub struct RingBufMap {
    map: MapFd,
}

impl FromMap for RingBufMap {
    fn from_map(map: UntypedMap) -> Result<Self, Error> {
        Ok(RingBufMap {
            map: MapFd::checked(map, MapKind::RingBuf, 0, 0)?,
        })
    }
}

/// What a ring buffer calls with each record's bytes.
pub type RecordCallback = Box<dyn FnMut(&[u8])>;

/// The ring buffer of -t events. The callback gets each record's bytes.
pub struct RingBuffer {
    ptr: NonNull<sys::ring_buffer>,
    _callback: Box<RecordCallback>,
    /// Freed before this (fields drop after `drop`).
    _map: RingBufMap,
}

impl RingBuffer {
    pub fn new(map: RingBufMap, callback: RecordCallback) -> Result<RingBuffer> {
        unsafe extern "C" fn trampoline(
            ctx: *mut c_void,
            data: *mut c_void,
            size: sys::size_t,
        ) -> c_int {
            // SAFETY: ctx is the boxed closure below, alive as long as the
            // ring buffer, and libbpf calls back from consume(), which
            // takes the ring buffer by &mut: no other reference exists.
            let callback = unsafe { &mut *(ctx as *mut RecordCallback) };
            // SAFETY: libbpf hands one record: `size` readable bytes at
            // `data`, valid until the callback returns.
            let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, size as usize) };
            callback(bytes);
            0
        }
        let mut callback = Box::new(callback);
        let ctx: *mut RecordCallback = &mut *callback;
        // SAFETY: the fd is a ring buffer map's (checked), open as long as
        // the ring buffer holds `map`; ctx outlives the ring buffer.
        let ptr = unsafe {
            sys::ring_buffer__new(map.map.fd, Some(trampoline), ctx.cast(), std::ptr::null())
        };
        NonNull::new(ptr)
            .map(|ptr| RingBuffer {
                ptr,
                _callback: callback,
                _map: map,
            })
            .ok_or_else(|| {
                Error::bpf_io("cannot set up the ring buffer", io::Error::last_os_error())
            })
    }

    /// A file descriptor that polls readable when records are waiting.
    pub fn epoll_fd(&self) -> c_int {
        // SAFETY: valid ring buffer.
        unsafe { sys::ring_buffer__epoll_fd(self.ptr.as_ptr()) }
    }

    /// Hands every waiting record to the callback, without blocking.
    pub fn consume(&mut self) {
        // SAFETY: valid ring buffer.
        unsafe { sys::ring_buffer__consume(self.ptr.as_ptr()) };
    }
}

impl Drop for RingBuffer {
    fn drop(&mut self) {
        // SAFETY: we own the ring buffer.
        unsafe { sys::ring_buffer__free(self.ptr.as_ptr()) };
    }
}

/// A struct member in BTF: name, byte offset, byte size.
pub type StructMember = (String, u32, u32);

/// The kernel's own BTF (/sys/kernel/btf/vmlinux), for struct layouts.
pub struct KernelBtf {
    ptr: NonNull<sys::btf>,
}

impl KernelBtf {
    pub fn load() -> Result<KernelBtf, io::Error> {
        // SAFETY: plain libbpf call; NULL on failure with errno set.
        let ptr = unsafe { sys::btf__load_vmlinux_btf() };
        NonNull::new(ptr)
            .map(|ptr| KernelBtf { ptr })
            .ok_or_else(io::Error::last_os_error)
    }

    /// The size in bytes of struct `name`.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        const BTF_KIND_STRUCT: u32 = 4;
        let cname = CString::new(name).ok()?;
        let btf = self.ptr.as_ptr();
        // SAFETY: btf is valid and the name NUL-terminated.
        let id = unsafe { sys::btf__find_by_name_kind(btf, cname.as_ptr(), BTF_KIND_STRUCT) };
        // SAFETY: as above; the id is libbpf's own.
        let size = (id >= 0).then(|| unsafe { sys::btf__resolve_size(btf, id as u32) })?;
        u32::try_from(size).ok()
    }

    /// The enumerators of enum `name` (32-bit values) and their values.
    pub fn enum_values(&self, name: &str) -> Option<Vec<(String, i64)>> {
        const BTF_KIND_ENUM: u32 = 6;
        let cname = CString::new(name).ok()?;
        let btf = self.ptr.as_ptr();
        // SAFETY: btf is valid; an ENUM type record is followed by `vlen`
        // btf_enum records, as the BTF format defines.
        unsafe {
            let id = sys::btf__find_by_name_kind(btf, cname.as_ptr(), BTF_KIND_ENUM);
            let t = (id >= 0).then(|| sys::btf__type_by_id(btf, id as u32))?;
            if t.is_null() {
                return None;
            }
            let values = t.add(1).cast::<sys::btf_enum>();
            let mut out = Vec::new();
            for i in 0..((*t).info & 0xffff) as usize {
                let v = &*values.add(i);
                let name = sys::btf__name_by_offset(btf, v.name_off);
                if name.is_null() {
                    return None;
                }
                let name = std::ffi::CStr::from_ptr(name).to_string_lossy();
                out.push((name.into_owned(), i64::from(v.val)));
            }
            Some(out)
        }
    }

    /// The members of struct `name`: (name, byte offset, byte size).
    pub fn struct_members(&self, name: &str) -> Option<Vec<(String, u32, u32)>> {
        const BTF_KIND_STRUCT: u32 = 4;
        let cname = CString::new(name).ok()?;
        let btf = self.ptr.as_ptr();
        // SAFETY: btf is valid; the type record returned by libbpf is
        // followed by `vlen` btf_member records, as the BTF format defines.
        unsafe {
            let id = sys::btf__find_by_name_kind(btf, cname.as_ptr(), BTF_KIND_STRUCT);
            if id < 0 {
                return None;
            }
            let t = sys::btf__type_by_id(btf, id as u32);
            if t.is_null() {
                return None;
            }
            let info = (*t).info;
            let vlen = (info & 0xffff) as usize;
            let bitfields = info >> 31 == 1;
            let members = t.add(1).cast::<sys::btf_member>();
            let mut out = Vec::with_capacity(vlen);
            for i in 0..vlen {
                let m = &*members.add(i);
                let bits = if bitfields {
                    m.offset & 0xff_ffff
                } else {
                    m.offset
                };
                let size = sys::btf__resolve_size(btf, m.type_);
                let name_ptr = sys::btf__name_by_offset(btf, m.name_off);
                if name_ptr.is_null() || size < 0 {
                    continue;
                }
                let member = std::ffi::CStr::from_ptr(name_ptr)
                    .to_string_lossy()
                    .into_owned();
                out.push((member, bits / 8, size as u32));
            }
            Some(out)
        }
    }
}

impl KernelBtf {
    /// The parameters of tracepoint `tp`'s prototype after `void *__data`:
    /// their names when BTF has the kernel's `__bpf_trace_<tp>` function
    /// (its parameters are named), else only how many there are, from the
    /// `btf_trace_<tp>` typedef (a pointer to an unnamed prototype).
    pub fn tracepoint_params(&self, tp: &str) -> Option<TracepointParams> {
        const BTF_KIND_PTR: u32 = 2;
        const BTF_KIND_TYPEDEF: u32 = 8;
        const BTF_KIND_FUNC: u32 = 12;
        const BTF_KIND_FUNC_PROTO: u32 = 13;
        let btf = self.ptr.as_ptr();
        let kind = |t: *const sys::btf_type| {
            // SAFETY: t is a valid type record from libbpf.
            (unsafe { (*t).info } >> 24) & 0x1f
        };
        // The prototype a FUNC or a typedef'd pointer leads to.
        let proto_of = |name: &str, first: u32| -> Option<*const sys::btf_type> {
            let cname = CString::new(name).ok()?;
            // SAFETY: btf is valid; ids come from libbpf itself.
            unsafe {
                let id = sys::btf__find_by_name_kind(btf, cname.as_ptr(), first);
                if id < 0 {
                    return None;
                }
                let mut t = sys::btf__type_by_id(btf, id as u32);
                for _ in 0..3 {
                    if t.is_null() {
                        return None;
                    }
                    match kind(t) {
                        BTF_KIND_FUNC_PROTO => return Some(t),
                        BTF_KIND_FUNC | BTF_KIND_TYPEDEF | BTF_KIND_PTR => {
                            t = sys::btf__type_by_id(btf, (*t).__bindgen_anon_1.type_);
                        }
                        _ => return None,
                    }
                }
                None
            }
        };
        // SAFETY: a FUNC_PROTO record is followed by `vlen` btf_param records.
        let params = |proto: *const sys::btf_type| unsafe {
            let vlen = ((*proto).info & 0xffff) as usize;
            let first = proto.add(1).cast::<sys::btf_param>();
            (0..vlen)
                .map(|i| {
                    let p = &*first.add(i);
                    let name = sys::btf__name_by_offset(btf, p.name_off);
                    if name.is_null() {
                        String::new()
                    } else {
                        std::ffi::CStr::from_ptr(name)
                            .to_string_lossy()
                            .into_owned()
                    }
                })
                .skip(1)
                .collect::<Vec<String>>()
        };
        if let Some(proto) = proto_of(&format!("__bpf_trace_{tp}"), BTF_KIND_FUNC) {
            let names = params(proto);
            if names.iter().all(|n| !n.is_empty()) {
                return Some(TracepointParams::Named(names));
            }
        }
        let proto = proto_of(&format!("btf_trace_{tp}"), BTF_KIND_TYPEDEF)?;
        Some(TracepointParams::Count(params(proto).len()))
    }
}

/// What BTF says about a tracepoint's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TracepointParams {
    Named(Vec<String>),
    Count(usize),
}

impl Drop for KernelBtf {
    fn drop(&mut self) {
        // SAFETY: we own the btf object.
        unsafe { sys::btf__free(self.ptr.as_ptr()) };
    }
}

/// Reads a Pod value from the start of `bytes` (ring buffer records).
pub fn read_pod<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: T is Pod and bytes holds at least size_of::<T>() bytes.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Map `name` of the opened (not loaded: no root needed) object as
    /// handle `M`, with no file descriptor: only its layout is checked.
    fn typed<M: FromMap>(obj: &Object, name: &str) -> Result<M> {
        M::from_map(UntypedMap {
            name: name.to_string(),
            fd: -1,
            layout: obj.map_layout(name)?,
            object: Arc::clone(&obj.handle),
        })
    }

    #[test]
    fn layout_checks_kind_and_sizes() {
        let hash = MapLayout {
            map_type: sys::BPF_MAP_TYPE_HASH,
            key_size: 16,
            value_size: 24,
        };
        assert!(hash.check("allocs", MapKind::Plain, 16, 24).is_ok());
        let err = hash.check("allocs", MapKind::Plain, 8, 24).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "map allocs: key and value are 16 and 24 bytes, read as 8 and 24: bpf/memleak.h and src/bpf/abi.rs disagree: {}",
                io::Error::from_raw_os_error(libc::EINVAL)
            )
        );
        assert!(matches!(
            err,
            Error::Bpf {
                errno: libc::EINVAL,
                ..
            }
        ));
        assert!(hash.check("allocs", MapKind::Plain, 16, 32).is_err());
        assert!(hash.check("allocs", MapKind::PerCpu, 16, 24).is_err());

        let percpu = MapLayout {
            map_type: sys::BPF_MAP_TYPE_PERCPU_ARRAY,
            key_size: 4,
            value_size: 8,
        };
        assert_eq!(percpu.kind(), MapKind::PerCpu);
        assert!(percpu.check("losses", MapKind::PerCpu, 4, 8).is_ok());
        // A per-CPU lookup writes one value per CPU: never into one value.
        assert!(percpu.check("losses", MapKind::Plain, 4, 8).is_err());

        let ring = MapLayout {
            map_type: sys::BPF_MAP_TYPE_RINGBUF,
            key_size: 0,
            value_size: 0,
        };
        assert!(ring.check("events", MapKind::RingBuf, 0, 0).is_ok());
        assert!(ring.check("events", MapKind::Plain, 0, 0).is_err());
    }

    /// The maps as the tracer types them agree with the embedded object;
    /// other types are refused.
    #[test]
    fn embedded_maps_match_their_handles() {
        let obj = Object::open().unwrap();
        typed::<Map<abi::AllocKey, abi::AllocInfo>>(&obj, "allocs").unwrap();
        typed::<Map<u64, abi::CombinedInfo>>(&obj, "combined").unwrap();
        typed::<Map<u32, abi::Notices>>(&obj, "notices").unwrap();
        typed::<Map<u32, u8>>(&obj, "targets").unwrap();
        typed::<Map<u32, abi::CfiRow>>(&obj, "cfi_rows").unwrap();
        typed::<Map<u32, abi::CfiRange>>(&obj, "cfi_ranges").unwrap();
        typed::<PerCpuMap<u32, u64>>(&obj, "losses").unwrap();
        typed::<StackMap>(&obj, "stacks").unwrap();
        for ring in ["events", "samples", "held"] {
            typed::<RingBufMap>(&obj, ring).unwrap();
        }

        let err = typed::<Map<u64, abi::AllocInfo>>(&obj, "allocs")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("map allocs: key and value are 16 and 24 bytes, read as 8 and 24"));
        assert!(typed::<Map<u32, abi::Notices>>(&obj, "combined").is_err());
        assert!(typed::<Map<u32, u64>>(&obj, "losses").is_err());
        assert!(typed::<PerCpuMap<u32, u64>>(&obj, "notices").is_err());
        assert!(typed::<StackMap>(&obj, "combined").is_err());
        assert!(typed::<RingBufMap>(&obj, "allocs").is_err());
    }

    /// A map handle keeps its object open after the Object is gone.
    #[test]
    fn handles_keep_their_object() {
        let obj = Object::open().unwrap();
        let notices = typed::<Map<u32, abi::Notices>>(&obj, "notices").unwrap();
        assert_eq!(Arc::strong_count(&obj.handle), 2);
        drop(obj);
        assert_eq!(Arc::strong_count(&notices.map._object), 1);
    }
}
