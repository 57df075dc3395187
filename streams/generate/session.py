"""The edit simulator: what a developer does in one session, action by action.

`_Session` adds the behaviours (type with typos, delete, undo, rename by hand, a pasted block,
tinkering past the TTL) and the prediction plans (accepted, rejected, ignored, discarded, none,
context lost, TTL) to the emitter, which turns each step into wire events.
"""

from __future__ import annotations

import bisect
import re
import sys

from streams.generate.config import _PLAN_WEIGHTS, NON_ASCII_LINES, QUIESCENCE_MS, TTL_MS
from streams.generate.emitter import _Emitter, _Window
from streams.generate.text import (
    _IDENT,
    _NOT_RENAMEABLE,
    _TOKEN,
    _chunks,
    _code_mask,
    _common_prefix,
    _good_code_line,
    _indent,
    _line_starts,
    _lines,
    _min_edit,
    _new_name,
    _secret_line,
    _typo,
    is_disabled_path,
)


class _Session(_Emitter):
    """One developer session: the emitter's state plus the developer's behaviours."""

    # -- behaviours ----------------------------------------------------------------------------

    def run(self) -> None:
        rng = self.rng
        n_pred = self.cfg.predictions_per_session
        n_actions = n_pred + rng.randint(max(1, n_pred // 2), n_pred + 2)
        flagged = set(rng.sample(range(n_actions), n_pred))
        secret_at = ttl_at = -1
        non_ascii: set[int] = set()
        if self.traits.secret_path:
            # not the last prediction, so a later one can carry a leaked history entry
            options = sorted(flagged)[:-1] or sorted(flagged) or list(range(n_actions))
            secret_at = rng.choice(options)
        if self.traits.ttl and flagged - {secret_at}:
            ttl_at = rng.choice(sorted(flagged - {secret_at}))
        if self.traits.non_ascii:
            # One line typed under a prediction (so excerpts carry it), sometimes one more.
            typed = sorted(flagged - {secret_at, ttl_at}) or sorted(set(range(n_actions)))
            non_ascii.add(rng.choice(typed))
            if rng.random() < 0.5:
                non_ascii.add(rng.randrange(n_actions))
        for i in range(n_actions):
            path = self.py_paths[0]
            if len(self.py_paths) > 1 and rng.random() < 0.3:
                path = self.py_paths[1]
            self._move_focus(path)
            if i == secret_at:
                self._pause()
                plan = self._plan(allow_context_lost=False) if i in flagged else None
                self.act_type(self.traits.secret_path or path, plan)
                self.leak_next = self.traits.leaky_history
            elif i in flagged:
                self._pause()
                plan = "ttl" if i == ttl_at else self._plan()
                if plan in ("accepted", "rejected", "ignored", "discarded") and rng.random() < 0.2:
                    self.act_rename(path, plan)
                else:
                    self.act_type(path, plan, non_ascii=i in non_ascii)
            else:
                kind = rng.choices(("type", "delete", "undo", "rename"), (50, 15, 20, 15))[0]
                if kind == "undo" and self._can_undo():
                    self._wait(300, 2500)
                    self.act_undo()
                    continue
                self._pause()
                if kind == "delete":
                    self.act_delete(path)
                elif kind == "rename":
                    self.act_rename(path, None)
                else:
                    self.act_type(path, None, non_ascii=i in non_ascii)
        self._close_group()
        self._flush_settles(sys.maxsize)  # the client settles what is still open at the end

    def _pause(self) -> None:
        """Thinking time between bursts: mostly short, sometimes past the quiescence window."""
        if self.rng.random() < 0.3:
            self._wait(QUIESCENCE_MS + 500, 20_000)
        else:
            self._wait(1_000, 9_000)

    def _plan(self, *, allow_context_lost: bool = True) -> str:
        plans = [p for p in _PLAN_WEIGHTS if allow_context_lost or p != "context_lost"]
        return self.rng.choices(plans, [_PLAN_WEIGHTS[p] for p in plans])[0]

    def _move_focus(self, path: str) -> None:
        """Developers work locally: drift near the last spot, sometimes jump elsewhere."""
        n = len(_lines(self.files[path]))
        f = self.focus[path]
        if self.jump or self.rng.random() < 0.15:
            f = (f + n // 3 + self.rng.randrange(max(1, n // 3))) % n
            self.jump = False
        else:
            f += self.rng.randint(-12, 25)
        self.focus[path] = min(max(f, 0), n - 1)

    def _donor_block(self) -> list[str]:
        """1-3 consecutive real lines from this session's sources, dedented."""
        rng = self.rng
        k = rng.randrange(len(self.py_paths))
        lines = _lines(self.initial[self.py_paths[k]])
        starts = self.donors[k]
        if not starts:
            return ["pass"]
        i = rng.choice(starts)
        base = len(_indent(lines[i]))
        block = [lines[i]]
        mask = self.donor_masks[k]
        for d, line in enumerate(lines[i + 1 : i + rng.choice((1, 1, 1, 2, 2, 3))], i + 1):
            if not mask[d] or not _good_code_line(line) or len(_indent(line)) < base:
                break
            block.append(line)
        while len(block) > 1 and block[-1].rstrip().endswith(":"):
            block.pop()  # do not leave an empty block header behind
        return [line[base:] for line in block]

    def _insertion_line(self, path: str) -> int:
        """A line near the focus after which new code can be typed."""
        lines = _lines(self.files[path])
        n = len(lines)
        f = min(max(self.focus[path], 0), max(n - 2, 0))
        if is_disabled_path(path):
            return f
        mask = _code_mask(lines)
        for d in range(60):
            for j in (f + d, f - d):
                if 0 <= j < n - 1 and mask[j] and mask[j + 1] and _good_code_line(lines[j]):
                    nxt = lines[j + 1]
                    opens = lines[j].rstrip().endswith(":")
                    # a more indented next line means a continuation, unless we open a block
                    if opens or len(_indent(nxt)) <= len(_indent(lines[j])) or not nxt.strip():
                        return j
        return f

    def _typed_lines(self, path: str, indent: str, non_ascii: bool) -> list[str]:
        if is_disabled_path(path):
            return [indent + _secret_line(self.rng, path)]
        if non_ascii:
            return [indent + self.rng.choice(NON_ASCII_LINES)]
        return [indent + line for line in self._donor_block()]

    def type_pieces(self, path: str, pos: int, pieces: list[str]) -> int:
        """Type `pieces` at `pos` (chars) with human spacing and the odd fixed typo."""
        rng = self.rng
        for piece in pieces:
            if piece.startswith("\n"):
                self._wait(200, 1_200)  # Enter (the editor auto-indents in the same edit)
            else:
                self._wait(50, 400)
            if piece.isascii() and piece.isalpha() and len(piece) >= 3 and rng.random() < 0.08:
                wrong = _typo(rng, piece)
                self.edit(path, pos, pos, wrong)
                pos += len(wrong)
                self._wait(150, 900)  # notices the typo
                keep = _common_prefix(wrong, piece)
                for _ in range(len(wrong) - keep):
                    self.edit(path, pos - 1, pos, "")  # backspace
                    pos -= 1
                    self._wait(60, 160)
                piece = piece[keep:]
            if piece:
                self.edit(path, pos, pos, piece)
                pos += len(piece)
        return pos

    def act_type(self, path: str, plan: str | None, *, non_ascii: bool = False) -> None:
        """Type 1-3 new lines after a nearby line, maybe with a prediction partway through."""
        rng = self.rng
        text = self.files[path]
        lines = _lines(text)
        j = self._insertion_line(path)
        indent = _indent(lines[j])
        if lines[j].rstrip().endswith(":") and not is_disabled_path(path):
            indent += "    "
        pieces: list[str] = []
        for line in self._typed_lines(path, indent, non_ascii):
            pieces.append("\n" + _indent(line))
            pieces.extend(_chunks(rng, line.lstrip(" ")))
        pos = _line_starts(text)[j] + len(lines[j])  # end of line j, before its newline
        self.focus[path] = j + 1
        if plan is None or len(pieces) < 2:
            self.type_pieces(path, pos, pieces)
            self._close_group()
            return
        k = rng.randint(1, min(3, len(pieces) - 1))
        pos = self.type_pieces(path, pos, pieces[:k])
        rest = "".join(pieces[k:])
        win = self.window(path, pos)
        text = self.files[path]
        right = text[win.rs : pos] + rest + text[pos : win.re]
        if plan == "accepted":
            self.predict_accepted(path, win, right)
            self._close_group()
            return
        wrong = text[win.rs : pos] + self._wrong_rest(rest) + text[pos : win.re]
        if plan == "ttl":
            rid, t0 = self.predict(path, win, right if rng.random() < 0.5 else wrong)
            self._tinker(path, pos, t0 + TTL_MS + rng.randint(5_000, 20_000))
        elif plan == "none":
            self.predict(path, win, wrong)
            self.jump = True  # the user walks away; the region settles by quiescence
        elif plan == "context_lost":
            rid, t0 = self.predict(path, win, wrong)
            d = rng.randint(100, 1_500)
            self.outcome(rid, t0 + d, "ignored", True)
            self.clock = t0 + d + rng.randint(200, 1_500)
            self._paste_over(path, win)
        else:
            rid, t0 = self.predict(path, win, self.served_output(plan, wrong, right))
            d = rng.randint(100, 2_000)
            self.outcome(rid, t0 + d, plan, plan != "discarded")
            if plan == "rejected":
                self.clock = t0 + d + rng.randint(100, 600)  # dismisses it, then types on
            self.type_pieces(path, pos, pieces[k:])
        self._close_group()

    def served_output(self, plan: str, wrong: str, right: str) -> str | None:
        """What the model served under a plan other than accepted: mostly the wrong answer;
        now and then the right one the user ignored, or nothing (discarded in flight)."""
        output: str | None = wrong
        if plan == "ignored" and self.rng.random() < 0.3:
            output = right  # right, but the user typed it themselves anyway
        if plan == "discarded" and self.rng.random() < 0.4:
            output = None  # superseded before the response arrived
        return output

    def predict_accepted(self, path: str, win: _Window, right: str) -> None:
        """A right prediction, shown and accepted after a moment: the region becomes it."""
        rng = self.rng
        rid, t0 = self.predict(path, win, right)
        d = rng.randint(300, 1_800)
        self.clock = t0 + d
        self.accept(path, win, right)
        self.outcome(rid, t0 + d + rng.randint(0, 150), "accepted", True)

    def _wrong_rest(self, rest: str) -> str:
        """Something plausible the model might have predicted instead of `rest`."""
        rng = self.rng
        idents = sorted(
            {m.group() for m in _IDENT.finditer(rest) if len(m.group()) >= 3} - _NOT_RENAMEABLE
        )
        if idents and rng.random() < 0.5:
            name = rng.choice(idents)
            other = _new_name(rng, name)
            out = re.sub(rf"(?<![\w\\]){re.escape(name)}(?![\w])", other, rest, count=1)
            if out != rest:
                return out
        tokens = _TOKEN.findall(rest)
        cut = rng.randint(0, max(0, len(tokens) - 1))
        donor = _TOKEN.findall(" ".join(x.strip() for x in self._donor_block()))
        out = "".join(tokens[:cut]) + "".join(donor[rng.randint(0, max(0, len(donor) - 1)) :])
        return out if out != rest else rest + "  # noqa"

    def _tinker(self, path: str, pos: int, until: int) -> None:
        """Keep editing at one spot with short gaps until `until`, so only the TTL settles it."""
        rng = self.rng
        typed: list[str] = []
        stream = _chunks(rng, " ".join(x.strip() for x in self._donor_block()))
        while self.clock < until:
            self._wait(1_000, 8_000)
            if typed and (rng.random() < 0.4 or sum(map(len, typed)) > 120):
                chunk = typed.pop()
                self.edit(path, pos - len(chunk), pos, "")  # delete the last word again
                pos -= len(chunk)
            else:
                if not stream:
                    stream = _chunks(rng, " " + " ".join(x.strip() for x in self._donor_block()))
                chunk = stream.pop(0)
                self.edit(path, pos, pos, chunk)
                pos += len(chunk)
                typed.append(chunk)

    def _paste_over(self, path: str, win: _Window) -> None:
        """Paste a big block over the region and beyond the excerpt (-> context_lost)."""
        rng = self.rng
        text = self.files[path]
        starts = _line_starts(text)
        nl = len(_lines(text))

        def line_of(i: int) -> int:
            return min(bisect.bisect_right(starts, i) - 1, nl - 1)

        extra = rng.randint(3, 15)
        if win.xe < len(text):
            start = win.rs
            last = min(nl - 1, line_of(win.xe) + extra)
            end = starts[last + 1] if last + 1 < len(starts) else len(text)
        else:  # the excerpt reaches the end of the file: reach before its start instead
            start = starts[max(0, line_of(win.xs) - extra)]
            end = win.re
        n_lines = text.count("\n", start, end)
        donor = _lines(self.initial[rng.choice(self.py_paths)])
        at = rng.randrange(max(1, len(donor) - n_lines))
        block = "".join(line + "\n" for line in donor[at : at + max(1, n_lines)])
        if not text[start:end].endswith("\n"):
            block = block.rstrip("\n")
        self.edit(path, start, end, block)
        self.focus[path] = line_of(start)

    def act_rename(self, path: str, plan: str | None) -> None:
        """Rename an identifier by hand, occurrence by occurrence, in a ~40-line window.

        With a prediction: after the first occurrence the model proposes renaming the others
        inside the editable region.
        """
        rng = self.rng
        text = self.files[path]
        starts = _line_starts(text)
        nl = len(_lines(text))
        lo = max(0, self.focus[path] - 10)
        hi = min(nl, self.focus[path] + 30)
        w0 = starts[lo]
        w1 = starts[hi] if hi < len(starts) else len(text)
        span = text[w0:w1]
        counts: dict[str, int] = {}
        for m in _IDENT.finditer(span):
            name = m.group()
            if len(name) >= 3 and name not in _NOT_RENAMEABLE and not name.startswith("__"):
                counts[name] = counts.get(name, 0) + 1
        names = sorted(n for n, c in counts.items() if c >= 2)
        if not names or is_disabled_path(path):
            self.act_type(path, plan)
            return
        old = rng.choice(names)
        new = _new_name(rng, old)
        pat = re.compile(rf"(?<![\w\\]){re.escape(old)}(?![\w])")
        first = w0 + next(pat.finditer(span)).start()
        self.edit(path, first, first + len(old), new)  # select the word, type the new name
        cursor = first + len(new)
        limit = w1 + len(new) - len(old)  # end of the window in the current text
        if plan is not None:
            win = self.window(path, cursor)
            text = self.files[path]
            inside = [m.start() for m in pat.finditer(text, cursor, win.re)]

            def region_with(name: str) -> str:
                r = text[win.rs : win.re]
                for o in reversed(inside):
                    r = r[: o - win.rs] + name + r[o - win.rs + len(old) :]
                return r

            right = region_with(new)
            if plan == "accepted" and not inside:
                plan = "discarded"  # nothing left to propose in the region
            if plan == "accepted":
                rid, t0 = self.predict(path, win, right)
                d = rng.randint(300, 1_800)
                self.clock = t0 + d
                before = len(self.files[path])
                self.accept(path, win, right)
                limit += len(self.files[path]) - before
                self.outcome(rid, t0 + d + rng.randint(0, 150), "accepted", True)
            else:
                if inside:
                    wrong_name = next(
                        (x for x in (_new_name(rng, old) for _ in range(5)) if x != new),
                        new + "_",
                    )
                    wrong: str | None = region_with(wrong_name)
                else:  # a classic bad prediction: it reverts what the user just did
                    r = text[win.rs : win.re]
                    at = first - win.rs
                    wrong = r[:at] + old + r[at + len(new) :] if 0 <= at < len(r) else r
                if plan == "ignored" and inside and rng.random() < 0.3:
                    wrong = right
                if plan == "discarded" and rng.random() < 0.4:
                    wrong = None
                rid, t0 = self.predict(path, win, wrong)
                d = rng.randint(100, 2_000)
                self.outcome(rid, t0 + d, plan, plan != "discarded")
                if plan == "rejected":
                    self.clock = t0 + d + rng.randint(100, 600)
        # The remaining occurrences in the window, by hand, top to bottom.
        pos = cursor
        while True:
            hit = pat.search(self.files[path], pos)
            if hit is None or hit.end() > limit:
                break
            self._wait(600, 3_000)
            self.edit(path, hit.start(), hit.end(), new)
            pos = hit.start() + len(new)
            limit += len(new) - len(old)
        self._close_group()

    def _can_undo(self) -> bool:
        g = self.closed[-1] if self.closed else None
        return (
            g is not None and self.group is None and not g.is_undo and self.files[g.path] == g.after
        )

    def act_undo(self) -> None:
        """Ctrl-Z right after a burst: one edit reverting the whole last group."""
        g = self.closed[-1]
        s, e, text = _min_edit(g.after, g.before)
        self.edit(g.path, s, e, text)
        assert self.group is not None
        self.group.is_undo = True
        self._close_group()

    def act_delete(self, path: str) -> None:
        """Select 1-3 whole lines near the focus and delete them."""
        text = self.files[path]
        starts = _line_starts(text)
        nl = len(_lines(text))
        if nl < 40:
            return
        j = min(max(self.focus[path], 0), nl - 5)
        n = self.rng.randint(1, 3)
        self.edit(path, starts[j], starts[j + n], "")
        self._close_group()
