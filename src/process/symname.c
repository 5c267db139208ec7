/*
 * symname.c — naming a function pointer for an error message, and the
 * error a start or a pool raises for a function missing from the registry.
 *
 * A function only runs in another process (spawn, fork server, a process
 * pool's worker) when CONC_REGISTER gave it a name: the other process is a
 * fresh copy of the program and a pointer means nothing there. When that
 * is forgotten the user should read the function's name and the fix, not
 * a bare CONC_EINVAL. dladdr names exported symbols (shared libraries,
 * -rdynamic); for the rest — the static functions of a program — the ELF
 * symbol table of the file that holds the address (when it was not
 * stripped) still knows the name. Neither found: the address. The same
 * table names the function around a code address for backtraces
 * (observe/debug.c), static functions and hidden ones included.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "process/internal.h"

/* The FUNC symbol at offset off in the ELF file at path (its .symtab);
 * with `within`, the one whose code holds off (*at: off from its start). */
static bool symtab_find(const char *path, uintptr_t off, bool within, char *out, size_t cap, uintptr_t *at)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    struct stat st;
    bool found = false;
    if (fstat(fd, &st) != 0 || st.st_size < (off_t)sizeof(ElfW(Ehdr))) {
        close(fd);
        return false;
    }
    size_t size = (size_t)st.st_size;
    const uint8_t *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return false;
    const ElfW(Ehdr) *eh = (const void *)m;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_shentsize != sizeof(ElfW(Shdr)) ||
        eh->e_shoff > size || eh->e_shnum > (size - eh->e_shoff) / sizeof(ElfW(Shdr)))
        goto out;
    const ElfW(Shdr) *sh = (const void *)(m + eh->e_shoff);
    for (unsigned i = 0; i < eh->e_shnum && !found; i++) {
        if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum)
            continue;
        const ElfW(Shdr) *strs = &sh[sh[i].sh_link];
        if (sh[i].sh_offset > size || sh[i].sh_size > size - sh[i].sh_offset ||
            strs->sh_offset > size || strs->sh_size > size - strs->sh_offset)
            continue;
        const ElfW(Sym) *sym = (const void *)(m + sh[i].sh_offset);
        size_t n = sh[i].sh_size / sizeof *sym;
        const char *names = (const char *)(m + strs->sh_offset);
        for (size_t k = 0; k < n; k++) {
            if (ELF64_ST_TYPE(sym[k].st_info) != STT_FUNC || sym[k].st_name >= strs->sh_size)
                continue;
            if (within ? off < sym[k].st_value || off - sym[k].st_value >= sym[k].st_size
                       : sym[k].st_value != off)
                continue;
            const char *nm = names + sym[k].st_name;
            size_t len = strnlen(nm, strs->sh_size - sym[k].st_name);
            if (len == 0 || len >= cap)
                continue;
            memcpy(out, nm, len);
            out[len] = 0;
            if (at)
                *at = off - sym[k].st_value;
            found = true;
            break;
        }
    }
out:
    munmap((void *)m, size);
    return found;
}

typedef struct {
    uintptr_t addr;
    const char *path;  /* the object's file, "" for the main program */
    uintptr_t bias;
    bool found;
} where_t;

static int find_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    where_t *w = arg;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && w->addr >= lo && w->addr - lo < ph->p_memsz) {
            w->path = info->dlpi_name ? info->dlpi_name : "";
            w->bias = info->dlpi_addr;
            w->found = true;
            return 1;
        }
    }
    return 0;
}

bool conc__fn_name(void (*fn)(void), char *out, size_t cap)
{
    Dl_info di;
    memset(&di, 0, sizeof di);
    if (dladdr((void *)fn, &di) && di.dli_sname && (void *)di.dli_saddr == (void *)fn) {
        snprintf(out, cap, "%s", di.dli_sname);
        return true;
    }
    where_t w = {.addr = (uintptr_t)fn};
    dl_iterate_phdr(find_object, &w);
    if (w.found && symtab_find(*w.path ? w.path : "/proc/self/exe", (uintptr_t)fn - w.bias, false, out, cap, NULL))
        return true;
    snprintf(out, cap, "the function at %p", (void *)fn);
    return false;
}

bool conc__code_name(const void *addr, char *out, size_t cap, uintptr_t *at)
{
    where_t w = {.addr = (uintptr_t)addr};
    dl_iterate_phdr(find_object, &w);
    return w.found && symtab_find(*w.path ? w.path : "/proc/self/exe", (uintptr_t)addr - w.bias, true, out, cap, at);
}

const conc_registration_t *conc__require_registered(void (*fn)(void), const char *where,
                                                    const char *macro)
{
    const conc_registration_t *r = conc_registry_find_fn(fn);
    if (r)
        return r;
    char name[256];
    /* Unnamed (a stripped program): the fix still reads as code. */
    bool named = conc__fn_name(fn, name, sizeof name);
    conc_fail(CONC_EINVAL, "%s is not registered: %s; add %s(%s); at file scope", name, where,
              macro, named ? name : "<its name>");
    const char *msg = "";
    conc_failure(&msg);
    fprintf(stderr, "conc: %s\n", msg);
    return NULL;
}
