/*
 * vendor/musl-compat/include/argp.h -- declaration-only <argp.h> for musl.
 *
 * Why: libbpf-sys's "vendored" feature builds elfutils' libelf from source.
 * elfutils' lib/color.c and lib/printversion.c (compiled into libeu, which
 * libelf's build needs) #include <argp.h>; musl has no argp. libelf itself
 * never calls argp_*, so declarations are enough and nothing links against
 * them. The configure checks for argp/fts/obstack are answered with the
 * cache variables ac_cv_search_argp_parse / ac_cv_search_fts_close /
 * ac_cv_search__obstack_free = "none required" (see README.md, "On an ordinary machine with rustup").
 *
 * Only needed when the musl C compiler does not already provide one: the
 * /opt/static-toolchains compilers made by setup-static-toolchains.sh ship an
 * identical stub, so `make static` / `make aarch64` do not use this file.
 * With a generic musl cross compiler (rustup path) it is wired in as
 *   CFLAGS_<target>="-idirafter $(CURDIR)/vendor/musl-compat/include"
 * (cc-rs hands CFLAGS_<target> to libbpf-sys, which passes it to elfutils'
 * configure; LIBBPF_SYS_EXTRA_CFLAGS only reaches libbpf, not elfutils).
 * -idirafter keeps a real <argp.h> (glibc, libargp) in front of this one.
 */
#ifndef MEMLEAK_MUSL_COMPAT_ARGP_H
#define MEMLEAK_MUSL_COMPAT_ARGP_H
#include <errno.h>
#include <stdio.h>
#ifndef __error_t_defined
#define __error_t_defined 1
typedef int error_t;
#endif
struct argp_state;
struct argp_child;
struct argp_option { const char *name; int key; const char *arg; int flags; const char *doc; int group; };
typedef error_t (*argp_parser_t) (int key, char *arg, struct argp_state *state);
struct argp {
  const struct argp_option *options; argp_parser_t parser; const char *args_doc;
  const char *doc; const struct argp_child *children;
  char *(*help_filter) (int key, const char *text, void *input); const char *argp_domain;
};
struct argp_state {
  const struct argp *root_argp; int argc; char **argv; int next; unsigned flags;
  unsigned arg_num; int quoted; void *input; void **child_inputs; void *hook;
  char *name; FILE *err_stream; FILE *out_stream; void *pstate;
};
#define OPTION_ARG_OPTIONAL 0x1
#define OPTION_HIDDEN 0x2
#define OPTION_ALIAS 0x4
#define OPTION_DOC 0x8
#define OPTION_NO_USAGE 0x10
#define ARGP_ERR_UNKNOWN E2BIG
#define ARGP_KEY_ARG 0
#define ARGP_KEY_END 0x1000001
#define ARGP_KEY_INIT 0x1000003
#define ARGP_HELP_USAGE 0x01
#define ARGP_HELP_SHORT_USAGE 0x02
#define ARGP_HELP_SEE 0x04
#define ARGP_HELP_LONG 0x08
#define ARGP_HELP_EXIT_ERR 0x100
#define ARGP_HELP_EXIT_OK 0x200
#define ARGP_HELP_STD_ERR (ARGP_HELP_SEE | ARGP_HELP_EXIT_ERR)
extern const char *argp_program_version;
extern const char *argp_program_bug_address;
extern void (*argp_program_version_hook) (FILE *, struct argp_state *);
error_t argp_parse (const struct argp *, int, char **, unsigned, int *, void *);
void argp_help (const struct argp *, FILE *, unsigned, char *);
void argp_error (const struct argp_state *, const char *, ...);
void argp_failure (const struct argp_state *, int, int, const char *, ...);
#endif
