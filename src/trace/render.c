/*
 * render.c — a derived timeline written out: Chrome trace-event JSON (for
 * Perfetto and chrome://tracing), an SVG picture and an ASCII timeline.
 *
 * Tracks map to (pid, tid) so that Perfetto groups them well: OS threads
 * are threads of the real process (their kernel tid); the green threads of
 * one hub and the hub's loop form a process of their own, named after the
 * hub's OS thread. Flows use the "bind_id" / "flow_out" / "flow_in" fields
 * of complete ("X") events: from a wake (spawn, submit) to the ready slice
 * (task slice) it starts.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trace/internal.h"

#define GROUP_PID_BASE 10000000L
#define LOOP_TID 2147483646L

static long track_pid(const conc__timeline_t *tl, const conc__track_t *t)
{
    (void)tl;
    if (t->kind == TK_GREEN || t->kind == TK_LOOP)
        return GROUP_PID_BASE + t->group;
    return (long)getpid();
}

static long track_tid(const conc__track_t *t)
{
    if (t->kind == TK_LOOP)
        return LOOP_TID;
    if (t->kind == TK_GREEN)
        return (long)t->id;
    return t->os_tid ? (long)t->os_tid : 4194304L + (long)t->id;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static const char *tname(const conc__timeline_t *tl, uint32_t peer)
{
    if (!peer || peer > tl->nt)
        return "?";
    const conc__track_t *t = &tl->t[peer - 1];
    return t->name[0] ? t->name : "?";
}

static void us(FILE *f, int64_t ns)
{
    if (ns < 0)
        ns = 0;
    fprintf(f, "%lld.%03lld", (long long)(ns / 1000), (long long)(ns % 1000));
}

static const conc__timeline_t *sort_tl;

static int cmp_slice(const void *x, const void *y)
{
    const conc__slice_t *a = &sort_tl->s[*(const size_t *)x], *b = &sort_tl->s[*(const size_t *)y];
    const conc__track_t *ta = &sort_tl->t[a->track], *tb = &sort_tl->t[b->track];
    long pa = track_pid(sort_tl, ta), pb = track_pid(sort_tl, tb);
    if (pa != pb)
        return pa < pb ? -1 : 1;
    long ia = track_tid(ta), ib = track_tid(tb);
    if (ia != ib)
        return ia < ib ? -1 : 1;
    if (a->ts != b->ts)
        return a->ts < b->ts ? -1 : 1;
    if (a->dur != b->dur)
        return a->dur > b->dur ? -1 : 1; /* the container first */
    return (x > y) - (x < y);
}

static const char *state_name(unsigned st)
{
    switch (st & ~S_OPEN) {
    case S_RUNNING: return "running";
    case S_READY: return "ready";
    case S_BLOCKED: return "blocked";
    case S_IOWAIT: return "I/O wait";
    case S_WAKE: return "wake";
    case S_SPAWN: return "spawn";
    case S_SUBMIT: return "submit";
    case S_TASK: return "task";
    case S_TURN: return "hub turn";
    case S_PSTART: return "process start";
    case S_PEXIT: return "process exit";
    case S_RESULT: return "result";
    case S_END: return "ended";
    default: return "?";
    }
}

int conc__timeline_json(const conc__timeline_t *tl, FILE *f)
{
    size_t *ord = malloc((tl->n ? tl->n : 1) * sizeof *ord);
    if (!ord)
        return CONC_ENOMEM;
    for (size_t i = 0; i < tl->n; i++)
        ord[i] = i;
    sort_tl = tl;
    qsort(ord, tl->n, sizeof *ord, cmp_slice);
    long pid = (long)getpid();
    fprintf(f, "{\"displayTimeUnit\":\"ns\",\n\"otherData\":{\"producer\":\"conc\",\"pid\":%ld,"
               "\"recorded_events\":%llu,\"dropped_events\":%llu,\"buffer_events\":%u},\n"
               "\"traceEvents\":[\n",
            pid, (unsigned long long)tl->events, (unsigned long long)tl->dropped, tl->buffer_events);
    fprintf(f, "{\"ph\":\"M\",\"pid\":%ld,\"tid\":0,\"name\":\"process_name\",\"args\":{\"name\":\"conc (pid %ld)\"}}",
            pid, pid);
    fprintf(f, ",\n{\"ph\":\"M\",\"pid\":%ld,\"tid\":0,\"name\":\"trace_stats\",\"args\":{\"dropped_events\":%llu,"
               "\"recorded_events\":%llu}}",
            pid, (unsigned long long)tl->dropped, (unsigned long long)tl->events);
    for (size_t i = 0; i < tl->nt; i++) {
        const conc__track_t *t = &tl->t[i];
        long p = track_pid(tl, t), tid = track_tid(t);
        char name[64];
        if (t->name[0])
            snprintf(name, sizeof name, "%s", t->name);
        else
            snprintf(name, sizeof name, "context %u", t->id);
        fprintf(f, ",\n{\"ph\":\"M\",\"pid\":%ld,\"tid\":%ld,\"name\":\"thread_name\",\"args\":{\"name\":", p, tid);
        json_str(f, name);
        fprintf(f, "}}");
        if (t->kind == TK_LOOP) {
            fprintf(f, ",\n{\"ph\":\"M\",\"pid\":%ld,\"tid\":%ld,\"name\":\"thread_sort_index\",\"args\":{\"sort_index\":-1}}",
                    p, tid);
            /* the group's process name: after its hub's thread */
            const char *hn = "?";
            long htid = 0;
            for (size_t j = 0; j < tl->nt; j++)
                if (tl->t[j].id == t->group) {
                    hn = tl->t[j].name[0] ? tl->t[j].name : "?";
                    htid = tl->t[j].os_tid;
                }
            snprintf(name, sizeof name, "green threads on %s (tid %ld)", hn, htid);
            fprintf(f, ",\n{\"ph\":\"M\",\"pid\":%ld,\"tid\":0,\"name\":\"process_name\",\"args\":{\"name\":", p);
            json_str(f, name);
            fprintf(f, "}}");
        }
    }
    int64_t t0 = tl->t0;
    for (size_t k = 0; k < tl->n; k++) {
        const conc__slice_t *s = &tl->s[ord[k]];
        const conc__track_t *t = &tl->t[s->track];
        unsigned st = s->state & ~S_OPEN;
        char name[96];
        const char *cat = "state";
        switch (st) {
        case S_BLOCKED:
            if (s->kind)
                snprintf(name, sizeof name, "blocked: %s %#llx", conc__wait_kind_name(s->kind),
                         (unsigned long long)s->obj);
            else
                snprintf(name, sizeof name, "blocked");
            break;
        case S_WAKE:
        case S_SPAWN:
            snprintf(name, sizeof name, "%s %s", state_name(st), tname(tl, s->peer));
            cat = "flow";
            break;
        case S_SUBMIT: snprintf(name, sizeof name, "submit"); cat = "task"; break;
        case S_TASK: snprintf(name, sizeof name, "task %#llx(%#llx)", (unsigned long long)s->a,
                              (unsigned long long)s->b); cat = "task"; break;
        case S_TURN: snprintf(name, sizeof name, "hub turn"); cat = "hub"; break;
        case S_RESULT: snprintf(name, sizeof name, "result of task %#llx", (unsigned long long)s->b); cat = "task"; break;
        case S_PSTART: snprintf(name, sizeof name, "process %lld started", (long long)s->a); cat = "process"; break;
        case S_PEXIT: snprintf(name, sizeof name, "process %lld exited (%lld)", (long long)s->a,
                               (long long)(int64_t)s->b); cat = "process"; break;
        default: snprintf(name, sizeof name, "%s", state_name(st)); break;
        }
        fprintf(f, ",\n{\"ph\":\"X\",\"pid\":%ld,\"tid\":%ld,\"ts\":", track_pid(tl, t), track_tid(t));
        us(f, s->ts - t0);
        fprintf(f, ",\"dur\":");
        us(f, s->dur);
        fprintf(f, ",\"cat\":\"%s\",\"name\":", cat);
        json_str(f, name);
        if (s->flow_out)
            fprintf(f, ",\"bind_id\":\"0x%llx\",\"flow_out\":true", (unsigned long long)s->flow_out);
        else if (s->flow_in)
            fprintf(f, ",\"bind_id\":\"0x%llx\",\"flow_in\":true", (unsigned long long)s->flow_in);
        fprintf(f, ",\"args\":{\"state\":\"%s\"", state_name(st));
        if (s->state & S_OPEN)
            fprintf(f, ",\"open\":true");
        if (st == S_BLOCKED) {
            fprintf(f, ",\"on\":\"%s\",\"obj\":\"%#llx\"", conc__wait_kind_name(s->kind), (unsigned long long)s->obj);
            if (s->peer) {
                fprintf(f, ",\"woken_by\":");
                json_str(f, tname(tl, s->peer));
            } else if (!(s->state & S_OPEN)) {
                fprintf(f, ",\"woken_by\":\"%s\"", s->rc == CONC_ETIMEDOUT ? "timeout"
                                                   : s->rc == 0       ? "unknown"
                                                   : s->rc == 1       ? "hub"
                                                                      : "interruption");
            }
        }
        if ((st == S_READY || st == S_WAKE || st == S_SPAWN || st == S_SUBMIT) && s->peer) {
            fprintf(f, ",\"%s\":", st == S_READY ? "woken_by" : "target");
            json_str(f, tname(tl, s->peer));
        }
        fprintf(f, "}}");
    }
    fprintf(f, "\n]}\n");
    free(ord);
    return ferror(f) ? CONC_ESYS : 0;
}

/* ------------------------------------------------------------- pictures */

/* The tracks drawn: those with state slices, in order of first sight. */
static size_t drawn_tracks(const conc__timeline_t *tl, size_t *rows)
{
    size_t n = 0;
    char *has = calloc(tl->nt ? tl->nt : 1, 1);
    if (!has)
        return 0;
    for (size_t i = 0; i < tl->n; i++) {
        unsigned st = tl->s[i].state & ~S_OPEN;
        if (st == S_RUNNING || st == S_READY || st == S_BLOCKED || st == S_IOWAIT)
            has[tl->s[i].track] = 1;
    }
    for (size_t i = 0; i < tl->nt; i++)
        rows[i] = has[i] ? n++ : SIZE_MAX;
    free(has);
    return n;
}

static const char *color(unsigned st)
{
    switch (st) {
    case S_RUNNING: return "#3cb44b";
    case S_READY: return "#ffd24a";
    case S_BLOCKED: return "#e6194b";
    case S_IOWAIT: return "#911eb4";
    default: return "#999999";
    }
}

int conc__timeline_svg(const conc__timeline_t *tl, FILE *f)
{
    size_t *rows = malloc((tl->nt ? tl->nt : 1) * sizeof *rows);
    if (!rows)
        return CONC_ENOMEM;
    size_t nr = drawn_tracks(tl, rows);
    const double left = 170, width = 760, rowh = 26, top = 40;
    double span = (double)(tl->t1 - tl->t0);
    if (span <= 0)
        span = 1;
    double h = top + rowh * (double)nr + 60;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", left + width + 20, h);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"10\" y=\"20\" font-size=\"14\">task states from a conc trace "
               "(%.3f ms)</text>\n", span / 1e6);
    fprintf(f, "<defs><marker id=\"arr\" markerWidth=\"8\" markerHeight=\"8\" refX=\"7\" refY=\"4\" "
               "orient=\"auto\"><path d=\"M0,0 L8,4 L0,8 z\" fill=\"#333\"/></marker></defs>\n");
    for (size_t i = 0; i < tl->nt; i++) {
        if (rows[i] == SIZE_MAX)
            continue;
        double y = top + rowh * (double)rows[i];
        fprintf(f, "<text x=\"10\" y=\"%.1f\">", y + 16);
        const char *nm = tl->t[i].name[0] ? tl->t[i].name : "?";
        for (const char *p = nm; *p; p++) {
            if (*p == '<')
                fputs("&lt;", f);
            else if (*p == '&')
                fputs("&amp;", f);
            else
                fputc(*p, f);
        }
        fprintf(f, "%s</text>\n", tl->t[i].kind == TK_GREEN ? " (green)" : "");
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, y + 11,
                left + width, y + 11);
    }
    for (size_t k = 0; k < tl->n; k++) {
        const conc__slice_t *s = &tl->s[k];
        unsigned st = s->state & ~S_OPEN;
        size_t r = rows[s->track];
        if (r == SIZE_MAX)
            continue;
        double y = top + rowh * (double)r;
        double x = left + width * (double)(s->ts - tl->t0) / span;
        if (st == S_RUNNING || st == S_READY || st == S_BLOCKED || st == S_IOWAIT) {
            double w = width * (double)s->dur / span;
            if (w < 0.5)
                w = 0.5;
            fprintf(f, "<rect x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.0f\" fill=\"%s\"><title>%s</title></rect>\n",
                    x, y + 4, w, rowh - 10, color(st), state_name(st));
        } else if ((st == S_WAKE || st == S_SPAWN) && s->peer && rows[s->peer - 1] != SIZE_MAX) {
            double y2 = top + rowh * (double)rows[s->peer - 1];
            fprintf(f, "<line x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#333\" "
                       "stroke-width=\"0.8\" marker-end=\"url(#arr)\"/>\n",
                    x, y + 11, x, y2 + (y2 > y ? 4 : 18));
        }
    }
    double ly = top + rowh * (double)nr + 20;
    static const unsigned legend[] = {S_RUNNING, S_READY, S_BLOCKED, S_IOWAIT};
    for (int i = 0; i < 4; i++) {
        double x = left + 130.0 * i;
        fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"14\" height=\"14\" fill=\"%s\"/>", x, ly, color(legend[i]));
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">%s</text>\n", x + 20, ly + 12, state_name(legend[i]));
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">arrow: woken by</text>\n", left + 520, ly + 12);
    fprintf(f, "</svg>\n");
    free(rows);
    return ferror(f) ? CONC_ESYS : 0;
}

void conc__timeline_ascii(const conc__timeline_t *tl, FILE *f, int width)
{
    size_t *rows = malloc((tl->nt ? tl->nt : 1) * sizeof *rows);
    if (!rows)
        return;
    size_t nr = drawn_tracks(tl, rows);
    if (width < 10)
        width = 10;
    double span = (double)(tl->t1 - tl->t0);
    if (span <= 0)
        span = 1;
    /* per row and column: ns spent in each state; the largest wins */
    double *acc = calloc(nr * (size_t)width * 5 + 1, sizeof *acc);
    if (!acc) {
        free(rows);
        return;
    }
    for (size_t k = 0; k < tl->n; k++) {
        const conc__slice_t *s = &tl->s[k];
        unsigned st = s->state & ~S_OPEN;
        size_t r = rows[s->track];
        if (r == SIZE_MAX || st < S_RUNNING || (st > S_BLOCKED && st != S_IOWAIT))
            continue;
        unsigned slot = st == S_IOWAIT ? 4 : st;
        double a = (double)(s->ts - tl->t0) / span * width, b = (double)(s->ts + s->dur - tl->t0) / span * width;
        for (int c = (int)a; c < width && c <= (int)b; c++) {
            double lo = a > c ? a : c, hi = b < c + 1 ? b : c + 1;
            double w = hi > lo ? hi - lo : 1e-9;
            acc[(r * (size_t)width + (size_t)c) * 5 + slot] += w;
        }
    }
    fprintf(f, "%-18s|%.*s| %.3f ms\n", "", width, "", span / 1e6);
    for (size_t i = 0; i < tl->nt; i++) {
        if (rows[i] == SIZE_MAX)
            continue;
        char line[1024];
        int w = width < 1000 ? width : 1000;
        for (int c = 0; c < w; c++) {
            double *v = &acc[(rows[i] * (size_t)width + (size_t)c) * 5];
            int best = 0;
            for (int q = 1; q < 5; q++)
                if (v[q] > (best ? v[best] : 0))
                    best = q;
            line[c] = " #-.~"[best];
        }
        line[w] = 0;
        fprintf(f, "%-18.18s|%s|\n", tl->t[i].name[0] ? tl->t[i].name : "?", line);
    }
    fprintf(f, "%-18s # running   - ready   . blocked   ~ I/O wait\n", "");
    free(acc);
    free(rows);
}
