# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Compiled hot loops of the metrics: comparison units, LCS keep-masks, kept rate, chrF deltas.

Every function here has a pure-Python twin that stays the reference implementation (and the
fallback when this extension is not built, see ``streams.scoring.backend``):

* ``units``                      ↔ ``tokens._units`` (the unit regex, hand-written);
* ``b_mask``                     ↔ ``lcs._b_mask`` (same bit-parallel table, same backtrack);
* ``KeptRateRef``                ↔ the body of ``kept_rate._KeptRateScorer``;
* ``collapse_whitespace``        ↔ ``chrf._collapse_whitespace``;
* ``ngram_deltas`` / ``f_beta``  ↔ ``chrf._ngram_changes`` / ``_Reference.of`` / ``_f_beta``.

Values are identical, not close: tests/streams/test_scoring_native.py compares each pair on
random inputs. Items are interned to small ints (a dict, so equality is Python's), the LCS
table is an array of 64-bit words per row, n-grams are packed code points (21 bits each).
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport qsort
from libc.string cimport memcpy, memset

from streams.scoring.tokens import _OPERATORS


cdef extern from "Python.h":
    Py_UCS4* PyUnicode_AsUCS4Copy(object text) except NULL
    object PyUnicode_FromKindAndData(int kind, const void* buffer, Py_ssize_t size)
    bint Py_UNICODE_ISALNUM(Py_UCS4 ch) nogil
    int PyUnicode_4BYTE_KIND


cdef extern from *:
    int __builtin_clzll(unsigned long long x) nogil


cdef void* _alloc(size_t size) except NULL:
    cdef void* p = PyMem_Malloc(size if size else 1)
    if p == NULL:
        raise MemoryError()
    return p


# ----------------------------------------------------------------------------- units

cdef enum:
    MAX_OPS = 64
    MAX_OP_LEN = 4

cdef Py_UCS4 _op_chars[MAX_OPS][MAX_OP_LEN]
cdef int _op_len[MAX_OPS]
cdef int _n_ops = 0
cdef bint _op_start[128]


cdef void _load_operators() except *:
    global _n_ops
    memset(_op_start, 0, sizeof(_op_start))
    if len(_OPERATORS) > MAX_OPS:
        raise ValueError("too many operators for the native tokenizer")
    for op in _OPERATORS:
        if len(op) > MAX_OP_LEN or not op.isascii():
            raise ValueError(f"operator {op!r} does not fit the native tokenizer")
        for k, ch in enumerate(op):
            _op_chars[_n_ops][k] = ord(ch)
        _op_len[_n_ops] = len(op)
        _op_start[ord(op[0])] = True
        _n_ops += 1


_load_operators()


cdef inline bint _is_newline(Py_UCS4 c) noexcept nogil:
    return c == 10 or c == 13


cdef inline bint _is_space(Py_UCS4 c) noexcept nogil:
    # tokens._WS_CLASS: Unicode White_Space minus \r and \n.
    if c < 0x80:
        return c == 9 or c == 11 or c == 12 or c == 32
    return (c == 0x85 or c == 0xA0 or c == 0x1680 or (0x2000 <= c <= 0x200A)
            or c == 0x2028 or c == 0x2029 or c == 0x202F or c == 0x205F or c == 0x3000)


cdef inline bint _is_word(Py_UCS4 c) noexcept nogil:
    # re's \w on str patterns: Py_UNICODE_ISALNUM or "_".
    if c < 0x80:
        return (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or c == 95
    return Py_UNICODE_ISALNUM(c)


cdef Py_ssize_t _unit_end(const Py_UCS4* s, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    """End of the unit starting at ``i``: the regex's alternatives, tried in its order."""
    cdef Py_UCS4 c = s[i]
    cdef Py_ssize_t j = i + 1
    cdef int k, t, length
    if _is_newline(c):
        while j < n and _is_newline(s[j]):
            j += 1
        return j
    if _is_space(c):
        while j < n and _is_space(s[j]):
            j += 1
        return j
    if _is_word(c):
        while j < n and _is_word(s[j]):
            j += 1
        return j
    if c < 128 and _op_start[c]:
        for k in range(_n_ops):  # first listed operator that matches, as the alternation
            length = _op_len[k]
            if i + length > n:
                continue
            t = 0
            while t < length and s[i + t] == _op_chars[k][t]:
                t += 1
            if t == length:
                return i + length
    return j


cdef inline int64_t _utf8_width(Py_UCS4 c) noexcept nogil:
    if c < 0x80:
        return 1
    if c < 0x800:
        return 2
    if c < 0x10000:
        return 3
    return 4


def units(str text):
    """``tokens._units``: newline runs, whitespace runs, identifier runs, operators, chars."""
    cdef Py_ssize_t n = len(text), i = 0, e
    cdef list out = []
    if n == 0:
        return out
    cdef Py_UCS4* s = PyUnicode_AsUCS4Copy(text)
    try:
        while i < n:
            e = _unit_end(s, n, i)
            out.append(text[i:e])
            i = e
    finally:
        PyMem_Free(s)
    return out


# ----------------------------------------------------------------------------- LCS


cdef struct IdSeq:
    int* ids
    int64_t* nbytes  # UTF-8 bytes of each unit (NULL for a generic sequence)
    Py_ssize_t n


cdef void _free_seq(IdSeq* seq) noexcept:
    PyMem_Free(seq.ids)
    PyMem_Free(seq.nbytes)
    seq.ids = NULL
    seq.nbytes = NULL
    seq.n = 0


cdef int _intern(dict ids, object item) except -1:
    value = ids.get(item)
    if value is None:
        value = len(ids)
        ids[item] = value
    return <int>value


cdef int _b_mask_ids(const int* a, Py_ssize_t n, const int* b, Py_ssize_t m, int n_ids,
                     char* mask) except -1:
    """``lcs._b_mask`` on interned items (ids < ``n_ids``): 1 in ``mask[j]`` keeps ``b[j]``.

    Same table (Hyyrö's bit-parallel rows, here arrays of 64-bit words, lowest word first)
    and same backtrack: along row i, the next stop is the highest set bit below j of
    (match | ~row); a stop on a match is a diagonal step, else a step up.
    """
    cdef Py_ssize_t p = 0, s = 0, limit, na, mb, i, j, w, k, words, found
    cdef int sl, n_slots = 0
    cdef uint64_t last, x, u, total, carry, v, top
    cdef uint64_t* match = NULL
    cdef uint64_t* rows = NULL
    cdef uint64_t* prev
    cdef uint64_t* cur
    cdef uint64_t* here
    cdef int* slot = NULL
    while p < n and p < m and a[p] == b[p]:
        p += 1
    limit = (n if n < m else m) - p
    while s < limit and a[n - 1 - s] == b[m - 1 - s]:
        s += 1
    memset(mask, 1, p)
    memset(mask + p, 0, m - p - s)
    memset(mask + m - s, 1, s)
    na = n - p - s
    mb = m - p - s
    if na == 0 or mb == 0:
        return 0
    words = (mb + 63) >> 6
    last = ~(<uint64_t>0) if mb % 64 == 0 else ((<uint64_t>1) << (mb % 64)) - 1
    try:
        # Match vectors only for items of b's middle: slot[id] indexes them, -1 elsewhere.
        slot = <int*>_alloc(n_ids * sizeof(int))
        memset(slot, 0xFF, n_ids * sizeof(int))
        for j in range(mb):
            if slot[b[p + j]] < 0:
                slot[b[p + j]] = n_slots
                n_slots += 1
        match = <uint64_t*>_alloc(n_slots * words * sizeof(uint64_t))
        memset(match, 0, n_slots * words * sizeof(uint64_t))
        for j in range(mb):
            match[slot[b[p + j]] * words + (j >> 6)] |= (<uint64_t>1) << (j & 63)
        rows = <uint64_t*>_alloc((na + 1) * words * sizeof(uint64_t))
        for w in range(words):
            rows[w] = ~(<uint64_t>0)
        rows[words - 1] = last
        for i in range(na):
            prev = rows + i * words
            cur = prev + words
            sl = slot[a[p + i]]
            if sl < 0:
                memcpy(cur, prev, words * sizeof(uint64_t))
                continue
            here = match + sl * words
            carry = 0
            for w in range(words):  # row' = ((row + u) | (row - u)) & full, u = row & match
                x = prev[w]
                u = x & here[w]
                total = x + u
                k = total < x
                total += carry
                carry = k | (total < carry)
                cur[w] = total | (x & ~u)
            cur[words - 1] &= last
        i = na
        j = mb
        while i > 0 and j > 0:
            sl = slot[a[p + i - 1]]
            cur = rows + i * words
            w = (j - 1) >> 6
            k = (j - 1) & 63
            top = ~(<uint64_t>0) if k == 63 else ((<uint64_t>1) << (k + 1)) - 1
            found = -1
            while w >= 0:
                v = ~cur[w]
                if sl >= 0:
                    v |= match[sl * words + w]
                v &= top
                if v:
                    found = w * 64 + 63 - __builtin_clzll(v)
                    break
                w -= 1
                top = ~(<uint64_t>0)
            if found < 0:
                break  # left all the way to column 0
            i -= 1
            j = found + 1
            if sl >= 0 and (match[sl * words + (found >> 6)] >> (found & 63)) & 1:
                j = found
                mask[p + found] = 1
    finally:
        PyMem_Free(slot)
        PyMem_Free(match)
        PyMem_Free(rows)
    return 0


cdef IdSeq _intern_seq(dict ids, object items) except *:
    cdef IdSeq seq
    cdef Py_ssize_t k = 0
    seq.n = len(items)
    seq.ids = <int*>_alloc(seq.n * sizeof(int))
    seq.nbytes = NULL
    try:
        for item in items:
            seq.ids[k] = _intern(ids, item)
            k += 1
    except BaseException:
        _free_seq(&seq)
        raise
    return seq


cdef list _mask_list(const char* mask, Py_ssize_t m):
    cdef list out = [False] * m
    cdef Py_ssize_t j
    for j in range(m):
        if mask[j]:
            out[j] = True
    return out


def b_mask(a, b):
    """``lcs._b_mask``: ``b``'s keep-mask of LCS(a, b), stepping left when left >= up."""
    cdef dict ids = {}
    cdef IdSeq sa, sb
    cdef char* mask = NULL
    sa.ids = NULL
    sa.nbytes = NULL
    sb.ids = NULL
    sb.nbytes = NULL
    try:
        sa = _intern_seq(ids, a)
        sb = _intern_seq(ids, b)
        mask = <char*>_alloc(sb.n)
        _b_mask_ids(sa.ids, sa.n, sb.ids, sb.n, len(ids), mask)
        return _mask_list(mask, sb.n)
    finally:
        _free_seq(&sa)
        _free_seq(&sb)
        PyMem_Free(mask)


# ----------------------------------------------------------------------------- kept rate


cdef IdSeq _unit_ids(dict ids, str text) except *:
    """Units of ``text`` interned in ``ids``, with their UTF-8 lengths."""
    cdef IdSeq seq
    cdef Py_ssize_t n = len(text), i = 0, e, k
    cdef int64_t width
    cdef Py_UCS4* s = NULL
    seq.n = 0
    seq.ids = <int*>_alloc(n * sizeof(int))
    seq.nbytes = <int64_t*>_alloc(n * sizeof(int64_t))
    if n == 0:
        return seq
    try:
        s = PyUnicode_AsUCS4Copy(text)
        while i < n:
            e = _unit_end(s, n, i)
            width = 0
            for k in range(i, e):
                width += _utf8_width(s[k])
            seq.ids[seq.n] = _intern(ids, text[i:e])
            seq.nbytes[seq.n] = width
            seq.n += 1
            i = e
    except BaseException:
        _free_seq(&seq)
        raise
    finally:
        PyMem_Free(s)
    return seq


cdef class KeptRateRef:
    """The reference side of the kept rate (``kept_rate._KeptRateScorer._prepare``), kept in C.

    ``score`` returns the candidate's byte counts; the ratios and early exits stay in Python.
    """

    cdef dict _ids
    cdef IdSeq _base
    cdef int* _ref_new
    cdef Py_ssize_t _n_ref_new
    cdef char* _ref_dropped  # base units the reference dropped
    cdef readonly int64_t reference_new
    cdef readonly int64_t reference_deleted

    def __cinit__(self, str base, str reference):
        cdef IdSeq ref
        cdef char* ref_keep = NULL
        cdef Py_ssize_t k
        cdef int n_ids
        self._ids = {}
        self._base.ids = NULL
        self._base.nbytes = NULL
        self._base.n = 0
        self._ref_new = NULL
        self._ref_dropped = NULL
        ref.ids = NULL
        ref.nbytes = NULL
        ref.n = 0
        self._base = _unit_ids(self._ids, base)
        try:
            ref = _unit_ids(self._ids, reference)
            ref_keep = <char*>_alloc(ref.n)
            self._ref_dropped = <char*>_alloc(self._base.n)
            self._ref_new = <int*>_alloc(ref.n * sizeof(int))
            n_ids = len(self._ids)
            # _keep_masks(ref, base) = (_b_mask(base, ref), _b_mask(ref, base))
            _b_mask_ids(self._base.ids, self._base.n, ref.ids, ref.n, n_ids, ref_keep)
            _b_mask_ids(ref.ids, ref.n, self._base.ids, self._base.n, n_ids, self._ref_dropped)
            self.reference_new = 0
            for k in range(ref.n):
                if not ref_keep[k]:
                    self._ref_new[self._n_ref_new] = ref.ids[k]
                    self._n_ref_new += 1
                    self.reference_new += ref.nbytes[k]
            self.reference_deleted = 0
            for k in range(self._base.n):
                self._ref_dropped[k] = not self._ref_dropped[k]
                if self._ref_dropped[k]:
                    self.reference_deleted += self._base.nbytes[k]
        finally:
            _free_seq(&ref)
            PyMem_Free(ref_keep)

    def __dealloc__(self):
        _free_seq(&self._base)
        PyMem_Free(self._ref_new)
        PyMem_Free(self._ref_dropped)

    def score(self, str candidate):
        """(candidate_new, candidate_deleted, kept, correctly_deleted), in UTF-8 bytes."""
        cdef IdSeq cand
        cdef char* cand_keep = NULL
        cdef char* base_keep = NULL
        cdef char* kept_mask = NULL
        cdef int* new_ids = NULL
        cdef int64_t* new_bytes = NULL
        cdef Py_ssize_t k, n_new = 0
        cdef int64_t candidate_new = 0, candidate_deleted = 0, kept = 0, correctly_deleted = 0
        cdef int n_ids
        cand.ids = NULL
        cand.nbytes = NULL
        cand.n = 0
        try:
            cand = _unit_ids(self._ids, candidate)
            n_ids = len(self._ids)
            cand_keep = <char*>_alloc(cand.n)
            base_keep = <char*>_alloc(self._base.n)
            new_ids = <int*>_alloc(cand.n * sizeof(int))
            new_bytes = <int64_t*>_alloc(cand.n * sizeof(int64_t))
            # _keep_masks(cand, base) = (_b_mask(base, cand), _b_mask(cand, base))
            _b_mask_ids(self._base.ids, self._base.n, cand.ids, cand.n, n_ids, cand_keep)
            _b_mask_ids(cand.ids, cand.n, self._base.ids, self._base.n, n_ids, base_keep)
            for k in range(cand.n):
                if not cand_keep[k]:
                    new_ids[n_new] = cand.ids[k]
                    new_bytes[n_new] = cand.nbytes[k]
                    n_new += 1
                    candidate_new += cand.nbytes[k]
            for k in range(self._base.n):
                if not base_keep[k]:
                    candidate_deleted += self._base.nbytes[k]
                    if self._ref_dropped[k]:
                        correctly_deleted += self._base.nbytes[k]
            kept_mask = <char*>_alloc(n_new)
            _b_mask_ids(self._ref_new, self._n_ref_new, new_ids, n_new, n_ids, kept_mask)
            for k in range(n_new):
                if kept_mask[k]:
                    kept += new_bytes[k]
        finally:
            _free_seq(&cand)
            PyMem_Free(cand_keep)
            PyMem_Free(base_keep)
            PyMem_Free(kept_mask)
            PyMem_Free(new_ids)
            PyMem_Free(new_bytes)
        return candidate_new, candidate_deleted, kept, correctly_deleted


# ----------------------------------------------------------------------------- chrF

cdef enum:
    CHRF_MAX_N = 6


def collapse_whitespace(str text):
    """``chrf._collapse_whitespace``: newline runs → ``\\n``, other whitespace runs → space.

    One pass is the same as the two substitutions: neither kind of run contains the other
    kind, and replacing one kind never joins two runs of the other.
    """
    cdef Py_ssize_t n = len(text), i = 0, out_n = 0
    cdef Py_UCS4 c
    cdef Py_UCS4* s
    if n == 0:
        return text
    s = PyUnicode_AsUCS4Copy(text)
    try:
        while i < n:
            c = s[i]
            if _is_newline(c):
                while i < n and _is_newline(s[i]):
                    i += 1
                s[out_n] = 10
            elif _is_space(c):
                while i < n and _is_space(s[i]):
                    i += 1
                s[out_n] = 32
            else:
                s[out_n] = c
                i += 1
            out_n += 1
        return PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, s, out_n)
    finally:
        PyMem_Free(s)


cdef struct Gram:
    uint64_t lo  # code points 0..2, 21 bits each
    uint64_t hi  # code points 3..5
    int n
    int delta


cdef int _gram_cmp(const void* x, const void* y) noexcept nogil:
    cdef const Gram* a = <const Gram*>x
    cdef const Gram* b = <const Gram*>y
    if a.n != b.n:
        return -1 if a.n < b.n else 1
    if a.lo != b.lo:
        return -1 if a.lo < b.lo else 1
    if a.hi != b.hi:
        return -1 if a.hi < b.hi else 1
    return 0


cdef inline void _pack(const Py_UCS4* s, Py_ssize_t i, int n, int delta, Gram* g) noexcept nogil:
    cdef uint64_t lo = 0, hi = 0
    cdef int k
    for k in range(n):
        if k < 3:
            lo |= (<uint64_t>s[i + k]) << (21 * k)
        else:
            hi |= (<uint64_t>s[i + k]) << (21 * (k - 3))
    g.lo = lo
    g.hi = hi
    g.n = n
    g.delta = delta


cdef Py_ssize_t _walk_unshared(const Py_UCS4* s, Py_ssize_t length, const Py_ssize_t* blocks,
                               Py_ssize_t n_blocks, int n, int delta, Gram* out) noexcept nogil:
    """``chrf._unshared_ngrams``: the n-grams not inside one matched block, written to ``out``
    (when not NULL) with ``delta``; returns how many there are."""
    cdef Py_ssize_t count = 0, pos = 0, b, start, size, i, end
    for b in range(n_blocks):
        start = blocks[2 * b]
        size = blocks[2 * b + 1]
        if size < n:
            continue
        if start > pos:
            if out != NULL:
                for i in range(pos, start):
                    _pack(s, i, n, delta, out + count + i - pos)
            count += start - pos
        end = start + size - n + 1
        if end > pos:
            pos = end
    if length - n + 1 > pos:
        if out != NULL:
            for i in range(pos, length - n + 1):
                _pack(s, i, n, delta, out + count + i - pos)
        count += length - n + 1 - pos
    return count


cdef Py_ssize_t* _block_array(list blocks) except? NULL:
    cdef Py_ssize_t* out = <Py_ssize_t*>_alloc(2 * len(blocks) * sizeof(Py_ssize_t))
    cdef Py_ssize_t k = 0
    for start, size in blocks:
        out[2 * k] = start
        out[2 * k + 1] = size
        k += 1
    return out


cdef class NgramDeltas:
    """The non-zero n-gram count deltas (after - before) of one edit, n = 1..6, sorted."""

    cdef Gram* _grams
    cdef Py_ssize_t _start[CHRF_MAX_N + 1]  # the grams of length n are [_start[n-1], _start[n])
    cdef int64_t _size[CHRF_MAX_N]  # Σ|delta| per n
    cdef bint _empty[CHRF_MAX_N]  # neither slice has an n-gram of this length

    def __cinit__(self):
        self._grams = NULL

    def __dealloc__(self):
        PyMem_Free(self._grams)

    @property
    def sizes(self):
        return [self._size[k] for k in range(CHRF_MAX_N)]


def ngram_deltas(str before, str after, list before_blocks, list after_blocks):
    """``chrf._ngram_changes`` after its slicing: the deltas of ``before`` → ``after``.

    ``*_blocks`` are each side's ``(start, size)`` of the matching blocks; n-grams inside
    one block cancel and are not counted (same walk as ``_unshared_ngrams``).
    """
    cdef NgramDeltas out = NgramDeltas()
    cdef Py_ssize_t la = len(before), lb = len(after), total = 0, k, r, w
    cdef Py_ssize_t* bb = NULL
    cdef Py_ssize_t* ab = NULL
    cdef Py_UCS4* sb = NULL
    cdef Py_UCS4* sa = NULL
    cdef Gram* grams = NULL
    cdef int n, d
    cdef Py_ssize_t longest = la if la > lb else lb
    try:
        bb = _block_array(before_blocks)
        ab = _block_array(after_blocks)
        sb = PyUnicode_AsUCS4Copy(before)
        sa = PyUnicode_AsUCS4Copy(after)
        for n in range(1, CHRF_MAX_N + 1):
            total += _walk_unshared(sa, lb, ab, len(after_blocks), n, 1, NULL)
            total += _walk_unshared(sb, la, bb, len(before_blocks), n, -1, NULL)
        grams = <Gram*>_alloc(total * sizeof(Gram))
        k = 0
        for n in range(1, CHRF_MAX_N + 1):
            k += _walk_unshared(sa, lb, ab, len(after_blocks), n, 1, grams + k)
            k += _walk_unshared(sb, la, bb, len(before_blocks), n, -1, grams + k)
        qsort(grams, total, sizeof(Gram), _gram_cmp)
        # Sum each run of equal grams; keep the non-zero sums in place, in order.
        w = 0
        out._start[0] = 0
        for n in range(1, CHRF_MAX_N + 1):
            out._size[n - 1] = 0
            out._empty[n - 1] = longest < n
        k = 0
        while k < total:
            d = 0
            r = k
            while r < total and _gram_cmp(&grams[r], &grams[k]) == 0:
                d += grams[r].delta
                r += 1
            if d:
                grams[w] = grams[k]
                grams[w].delta = d
                out._size[grams[w].n - 1] += d if d > 0 else -d
                w += 1
            k = r
        # Run boundaries per n.
        k = 0
        for n in range(1, CHRF_MAX_N + 1):
            while k < w and grams[k].n == n:
                k += 1
            out._start[n] = k
        out._grams = grams
        grams = NULL
    finally:
        PyMem_Free(bb)
        PyMem_Free(ab)
        PyMem_Free(sb)
        PyMem_Free(sa)
        PyMem_Free(grams)
    return out


def f_beta(NgramDeltas expected not None, NgramDeltas actual not None, double beta):
    """``chrf._f_beta``: same sums in the same order, so the same float."""
    cdef double p_sum = 0.0, r_sum = 0.0, p, r, b2
    cdef int64_t tp, de, da
    cdef Py_ssize_t i, j, i_end, j_end
    cdef int n, c
    for n in range(CHRF_MAX_N):
        if expected._empty[n] and actual._empty[n]:
            p_sum += 1.0
            r_sum += 1.0
            continue
        tp = 0
        i = expected._start[n]
        i_end = expected._start[n + 1]
        j = actual._start[n]
        j_end = actual._start[n + 1]
        while i < i_end and j < j_end:  # merge join: min of equal-signed deltas per gram
            c = _gram_cmp(&expected._grams[i], &actual._grams[j])
            if c < 0:
                i += 1
            elif c > 0:
                j += 1
            else:
                de = expected._grams[i].delta
                da = actual._grams[j].delta
                if de > 0 and da > 0:
                    tp += da if da < de else de
                elif de < 0 and da < 0:
                    tp += -da if da > de else -de
                i += 1
                j += 1
        if actual._size[n]:
            p_sum += <double>tp / <double>actual._size[n]
        if expected._size[n]:
            r_sum += <double>tp / <double>expected._size[n]
    p = p_sum / CHRF_MAX_N
    r = r_sum / CHRF_MAX_N
    if p + r == 0:
        return 0.0
    b2 = beta * beta
    return 100.0 * (1 + b2) * p * r / (b2 * p + r)
