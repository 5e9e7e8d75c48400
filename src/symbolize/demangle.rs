//! Turns raw symbol names into what a person reads in a stack.

use std::borrow::Cow;

/// Longest name handed to a demangler: real mangled names are far shorter,
/// and pathological ones only cost time.
const MAX_MANGLED: usize = 4096;

/// Demangles Rust (legacy and v0) and C++ names; strips an ELF symbol
/// version (`malloc@@GLIBC_2.2.5` -> `malloc`). Anything else is returned
/// unchanged.
pub fn demangle(name: &str) -> Cow<'_, str> {
    // Mangled names never contain '@', so everything after it is a version
    // (or a `@plt` style decoration).
    let base = match name.find('@') {
        Some(0) | None => name,
        Some(i) => &name[..i],
    };
    if base.len() <= MAX_MANGLED {
        // Rust first: legacy Rust names are also valid C++ names, and the C++
        // demangler would keep the `h0123…` hash as a path component.
        if base.starts_with("_R") || base.starts_with("_ZN") || base.starts_with("__R") {
            if let Ok(d) = rustc_demangle::try_demangle(base) {
                // `{:#}` drops the hash suffix.
                return Cow::Owned(format!("{d:#}"));
            }
        }
        if base.starts_with("_Z") {
            if let Some(d) = demangle_cpp(base) {
                return Cow::Owned(d);
            }
        }
    }
    Cow::Borrowed(base)
}

fn demangle_cpp(name: &str) -> Option<String> {
    let sym = cpp_demangle::Symbol::new(name).ok()?;
    sym.demangle().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpp() {
        assert_eq!(demangle("_Znwm"), "operator new(unsigned long)");
        assert_eq!(demangle("_ZdlPv"), "operator delete(void*)");
        assert_eq!(demangle("_ZN3foo3barEv"), "foo::bar()");
        assert_eq!(demangle("_ZN3foo3barEv.cold"), "foo::bar() [clone .cold]");
    }

    #[test]
    fn rust() {
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(demangle("_RNvCs1234_7mycrate3foo"), "mycrate::foo");
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE.llvm.1234"),
            "core::ptr::drop_in_place"
        );
    }

    #[test]
    fn versions_and_plain_names() {
        assert_eq!(demangle("malloc@@GLIBC_2.2.5"), "malloc");
        assert_eq!(demangle("realpath@GLIBC_2.2.5"), "realpath");
        assert_eq!(
            demangle("_Znwm@@GLIBCXX_3.4"),
            "operator new(unsigned long)"
        );
        assert!(matches!(demangle("malloc"), Cow::Borrowed("malloc")));
        assert_eq!(demangle("main"), "main");
        assert_eq!(demangle("__kmalloc_noprof"), "__kmalloc_noprof");
        assert_eq!(demangle("@"), "@");
        assert_eq!(demangle(""), "");
    }

    #[test]
    fn garbage_does_not_panic() {
        for s in [
            "_Z",
            "_ZN",
            "_R",
            "_ZNZZZZ",
            "_ZN3foo",
            "_Z\u{1F600}",
            "_RNv",
            "_ZN9999999999999999999x",
        ] {
            let _ = demangle(s);
        }
        let long = format!("_ZN{}E", "3abc".repeat(5000));
        let _ = demangle(&long);
        let nested = format!("_Z{}", "PFv".repeat(2000));
        let _ = demangle(&nested);
    }
}
