/* conc/process.h from C++: CONC__SIG_OF is the overload set conc__sig_of
 * there (C has _Generic), so CONC_REGISTER tags each function by its type
 * — a process function (int fn(const void *, size_t)), a task (void
 * *fn(void *)), anything else — also for noexcept functions (part of the
 * type since C++17), extern "C" ones and captureless lambdas; the entry
 * is complete when the registry sees it (a static initialiser, not a
 * dynamic one a constructor could run before). Built with a C++ compiler
 * only (CMakeLists.txt builds each tests/<name>_test.cpp). */
#include <criterion/criterion.h>

#include <conc/process.h>

static int proc_fn(const void *arg, size_t len)
{
    (void)arg;
    return (int)len;
}
static int proc_fn_noexcept(const void *arg, size_t len) noexcept
{
    (void)arg;
    return (int)len + 1;
}
static void *task_fn(void *arg) { return arg; }
static void *task_fn_noexcept(void *arg) noexcept { return arg; }
static int other_fn(int x) { return x; }
static void other_void(void) {}
extern "C" int conc_test_c_proc(const void *arg, size_t len);
extern "C" int conc_test_c_proc(const void *arg, size_t len)
{
    (void)arg;
    return (int)len;
}

CONC_REGISTER(proc_fn);
CONC_REGISTER(proc_fn_noexcept);
CONC_REGISTER(task_fn_noexcept);
CONC_REGISTER(other_fn);
CONC_REGISTER_AS(task_fn, "sig_test.task", 101); /* a user's tag */

/* a constant: usable where C++ wants one */
static_assert(CONC__SIG_OF(&proc_fn) == CONC_SIG_PROCESS, "process function");
static_assert(CONC__SIG_OF(&task_fn) == CONC_SIG_TASK, "task function");
static_assert(CONC__SIG_OF(&other_fn) == CONC_SIG_OTHER, "other function");

Test(process_sig, tags_by_function_type)
{
    cr_assert_eq(conc__sig_of(&proc_fn), CONC_SIG_PROCESS);
    cr_assert_eq(conc__sig_of(proc_fn), CONC_SIG_PROCESS); /* the function decays */
    cr_assert_eq(conc__sig_of(&proc_fn_noexcept), CONC_SIG_PROCESS, "a noexcept process function");
    cr_assert_eq(conc__sig_of(&conc_test_c_proc), CONC_SIG_PROCESS, "an extern \"C\" one");
    cr_assert_eq(conc__sig_of(+[](const void *, size_t) { return 0; }), CONC_SIG_PROCESS, "a captureless lambda");
    cr_assert_eq(conc__sig_of(&task_fn), CONC_SIG_TASK);
    cr_assert_eq(conc__sig_of(&task_fn_noexcept), CONC_SIG_TASK, "a noexcept task");
    cr_assert_eq(conc__sig_of(&other_fn), CONC_SIG_OTHER);
    cr_assert_eq(conc__sig_of(&other_void), CONC_SIG_OTHER);
    cr_assert_eq(conc__sig_of((void *)nullptr), CONC_SIG_OTHER, "not a function at all");
}

static void check_entry(const char *name, void (*fn)(void), int sig)
{
    const conc_registration_t *r = conc_registry_find(name);
    cr_assert_not_null(r, "'%s' is not registered", name);
    cr_assert_str_eq(r->name, name);
    cr_assert_eq((void *)r->fn, (void *)fn, "'%s': another function", name);
    cr_assert_eq(r->sig, sig, "'%s': tag %d, want %d", name, r->sig, sig);
    cr_assert_eq(conc_registry_find_fn(fn), r, "'%s' not found by its pointer", name);
}

Test(process_sig, register_records_name_function_and_tag)
{
    check_entry("proc_fn", (void (*)(void))proc_fn, CONC_SIG_PROCESS);
    check_entry("proc_fn_noexcept", (void (*)(void))proc_fn_noexcept, CONC_SIG_PROCESS);
    check_entry("task_fn_noexcept", (void (*)(void))task_fn_noexcept, CONC_SIG_TASK);
    check_entry("other_fn", (void (*)(void))other_fn, CONC_SIG_OTHER);
    check_entry("sig_test.task", (void (*)(void))task_fn, 101);
    /* and the process function is callable through the type it was tagged as */
    const conc_registration_t *r = conc_registry_find("proc_fn_noexcept");
    cr_assert_not_null(r);
    cr_assert_eq(((conc_process_fn)r->fn)("ab", 2), 3);
}
