"""Math answer checking: extract the final answer, then math-verify equivalence in killable workers.

- `extract_answer(response)`: the last `\\boxed{...}` (or `\\fbox{...}`) after the last `</think>`; if there is
  none, the last "the answer is X" / "final answer: X" / "Answer: X" sentence. `None` = no answer found.
- `verify_math(response, gold, timeout_s)`: one item, through a shared single-worker pool.
- `MathVerifierPool(workers, timeout_s)`: the batch API the verify stage uses. Each item gets a wall-clock
  limit measured from the moment a worker starts on it; a worker that overruns is killed and replaced, and
  the item's verdict is `timeout`. So a batch with pathological answers finishes in bounded time:
  about (items × typical cost) / workers + (pathological items × timeout_s) / workers.
  Items travel to a worker in chunks (one write, answers streamed back one per item, in order), so the
  per-item round trip is hidden; a timeout or crash costs only the item in progress, and the unanswered
  rest of its chunk is re-sent to the replacement worker.

math-verify's own `signal.alarm` timeouts are switched off inside the workers (they cannot interrupt sympy's C
code, and they silently turn a timeout into `False`, i.e. a false "wrong").
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Iterable, Sequence

from ded_ray.verifiers.verdict import ERROR, TIMEOUT, UNPARSABLE, Verdict

MAX_ANSWER_CHARS = 4096  # longer extracted answers are stored truncated (the check sees the full text)
DEFAULT_WORKER_MEMORY_MB = 3072  # address space per worker: sympy needs ~0.5 GiB; a 10^(10^10) needs 4+
DEFAULT_CHUNK_SIZE = 16  # items in flight per worker: hides the round trip; small enough to share a batch out
_MAX_QUEUED_BYTES = 32 * 1024  # what may wait unread for a busy worker (a pipe holds 64 KiB)

# --- answer extraction ---------------------------------------------------------------------------------

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_ANSWER_PHRASES = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)?\s*[:：]?\s*(.+)", re.IGNORECASE
)


def _final_part(response: str) -> str:
    """The text after the last `</think>`; the whole response when there is no closing tag."""
    head, sep, tail = response.rpartition("</think>")
    return tail if sep else response


def _boxed_contents(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5`, in order (balanced braces)."""
    found: list[tuple[int, str]] = []
    for command in _BOX_COMMANDS:
        start = 0
        while (at := text.find(command, start)) != -1:
            i = at + len(command)
            start = i
            if i < len(text) and text[i] == "{":
                depth, j = 0, i
                while j < len(text):
                    if text[j] == "{":
                        depth += 1
                    elif text[j] == "}":
                        depth -= 1
                        if depth == 0:
                            found.append((at, text[i + 1 : j]))
                            break
                    j += 1
            elif i < len(text) and text[i] == " ":  # "\boxed 5" (no braces), up to the next space or $
                match = re.match(r" +([^\s$]+)", text[i:])
                if match:
                    found.append((at, match.group(1)))
    return [content for _, content in sorted(found)]


def _clean(answer: str) -> str:
    answer = answer.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if answer.startswith(left) and answer.endswith(right) and len(answer) > len(left) + len(right):
            answer = answer[len(left) : -len(right)].strip()
    return answer.rstrip(" .。").strip()


def extract_answer(response: str | None) -> str | None:
    """The final answer of a model response, as LaTeX without `$` delimiters; `None` when there is none."""
    if not isinstance(response, str) or not response.strip():
        return None
    final = _final_part(response)
    boxed = [b for b in _boxed_contents(final) if b.strip()]
    if boxed:
        return _clean(boxed[-1])
    phrases = _ANSWER_PHRASES.findall(final)
    for candidate in reversed(phrases):
        line = candidate.strip().splitlines()[0] if candidate.strip() else ""
        # "the answer is $5$." -> "5"; prefer the math inside $...$ when the sentence has one
        math = re.findall(r"\$([^$]+)\$", line)
        cleaned = _clean(math[-1] if math else line)
        if cleaned:
            return cleaned
    return None


# --- the worker pool -----------------------------------------------------------------------------------


class _Worker:
    """One `python -m ded_ray.verifiers._math_worker` process and the bytes read from it so far."""

    def __init__(self, memory_mb: int | None) -> None:
        # A plain subprocess (not multiprocessing): no re-import of the caller's __main__, safe to start
        # from a multithreaded Ray actor, and killable as a whole.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ded_ray.verifiers._math_worker", str(memory_mb or 0)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.fd = self.process.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = b""
        self.ready = False

    def send(self, message) -> None:
        self.send_raw((json.dumps(message) + "\n").encode())

    def send_raw(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def read_lines(self) -> list | None:
        """Complete JSON messages available now; None when the worker has exited (EOF)."""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


class MathVerifierPool:
    """`workers` math-verify processes with a per-item wall-clock limit; not thread-safe (one caller).

    `timeout_s` is seconds per item, from the moment a ready worker starts on it to its answer. `memory_mb`
    caps each worker's address space (None = no cap); running out counts as `timeout` (the check exceeded
    its budget), with the reason in `detail`. Start-up (importing sympy and warming the parser, ~2-4 s) is
    not charged to any item. `chunk_size` is how many items a worker may have queued at once (1 = one round
    trip per item); the per-item limit holds either way. Use as a context manager or call `close()`.
    """

    def __init__(self, workers: int = 1, timeout_s: float = 5.0,
                 memory_mb: int | None = DEFAULT_WORKER_MEMORY_MB,
                 start_timeout_s: float = 120.0, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if workers < 1:
            raise ValueError(f"MathVerifierPool needs workers >= 1, got {workers}")
        if timeout_s <= 0:
            raise ValueError(f"MathVerifierPool needs timeout_s > 0, got {timeout_s}")
        if chunk_size < 1:
            raise ValueError(f"MathVerifierPool needs chunk_size >= 1, got {chunk_size}")
        self.timeout_s = float(timeout_s)
        self.chunk_size = int(chunk_size)
        self.memory_mb = memory_mb
        self.start_timeout_s = start_timeout_s
        self._workers = [_Worker(memory_mb) for _ in range(workers)]
        self.replaced = 0  # workers killed after a timeout or a crash (for the benchmark and tests)

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        self.replaced += 1
        fresh = _Worker(self.memory_mb)
        self._workers[self._workers.index(worker)] = fresh
        return fresh

    def check_many(self, pairs: Sequence[tuple[str, str]], timeout_s: float | None = None
                   ) -> list[tuple[str, str, float]]:
        """Check (answer, gold) LaTeX pairs; returns (status, detail, elapsed_ms) per pair, in order.

        Items go to each worker in chunks (up to `chunk_size` lines in flight, one write), and the worker
        answers each item as it finishes, in order. So the host always knows which item a worker is on:
        the first unanswered one, started when the previous answer arrived (or when it was sent to an idle
        worker). Its deadline is that moment + the limit; when it passes, that item alone is `timeout`, the
        worker is killed and replaced, and the rest of its chunk goes back to the front of the queue. A
        worker that dies mid-chunk likewise costs only the item it was on (`error`).
        """
        if self._workers == []:
            raise RuntimeError("MathVerifierPool is closed; create a new one")
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        results: list[tuple[str, str, float] | None] = [None] * len(pairs)
        pending = deque(range(len(pairs)))
        # lines in flight per worker: enough to hide the round trip, few enough to share a batch out
        depth = max(1, min(self.chunk_size, -(-len(pairs) // len(self._workers))))
        lines: dict[int, bytes] = {}
        inflight: dict[int, deque] = {}  # worker fd -> items sent and not answered yet, in order
        inflight_bytes: dict[int, int] = {}
        head_started: dict[int, float] = {}  # worker fd -> when it started on its first unanswered item
        starting: dict[int, float] = {w.fd: time.monotonic() for w in self._workers if not w.ready}

        def line(item: int) -> bytes:
            if item not in lines:
                lines[item] = (json.dumps([item, *pairs[item]]) + "\n").encode()
            return lines[item]

        def retire(worker: _Worker) -> None:
            """Kill and replace `worker`; its unanswered items go back to the front of the queue."""
            fd = worker.fd
            pending.extendleft(reversed(inflight.pop(fd, deque())))
            inflight_bytes.pop(fd, None)
            head_started.pop(fd, None)
            starting.pop(fd, None)
            fresh = self._replace(worker)
            starting[fresh.fd] = time.monotonic()

        def fail_head(worker: _Worker, result: tuple[str, str, float]) -> None:
            item = inflight[worker.fd].popleft()
            results[item] = result
            retire(worker)

        while pending or any(inflight.values()):
            for worker in list(self._workers):  # top up ready workers' chunks
                fd = worker.fd
                queue = inflight.setdefault(fd, deque())
                if not (pending and worker.ready) or len(queue) > depth // 2:
                    continue
                batch, size = [], inflight_bytes.get(fd, 0)
                while pending and len(queue) + len(batch) < depth:
                    data = line(pending[0])
                    # a busy worker reads only between items: keep what waits for it well inside the pipe
                    if (queue or batch) and size + len(data) > _MAX_QUEUED_BYTES:
                        break
                    batch.append(pending.popleft())
                    size += len(data)
                if not batch:
                    continue
                idle = not queue
                queue.extend(batch)
                inflight_bytes[fd] = size
                try:
                    worker.send_raw(b"".join(line(item) for item in batch))
                except (BrokenPipeError, OSError):
                    retire(worker)
                    continue
                if idle:
                    head_started[fd] = time.monotonic()
            by_fd = {w.fd: w for w in self._workers}
            now = time.monotonic()
            deadlines = [head_started[fd] + limit for fd, queue in inflight.items() if queue and fd in by_fd]
            deadlines += [started + self.start_timeout_s for started in starting.values()]
            wait_s = max(0.0, min(deadlines) - now) if deadlines else 0.05
            readable, _, _ = select.select(list(by_fd), [], [], wait_s)
            for fd in readable:
                worker = by_fd[fd]
                if worker not in self._workers:  # replaced earlier in this round
                    continue
                messages = worker.read_lines()
                queue = inflight.get(fd) or deque()
                if messages is None:  # the worker died: crash, OOM kill, ...
                    code = worker.process.poll()
                    if queue:
                        fail_head(worker, (ERROR, f"math-verify worker died (exit code {code})",
                                           (time.monotonic() - head_started[fd]) * 1000))
                    else:
                        if self.replaced > 10 * len(self._workers) + len(pairs):
                            raise RuntimeError(f"math-verify workers keep dying at start (exit code {code});"
                                               f" run `{sys.executable} -m ded_ray.verifiers._math_worker`"
                                               " to see why")
                        retire(worker)
                    continue
                for message in messages:
                    if isinstance(message, dict) and message.get("ready"):
                        worker.ready = True
                        starting.pop(fd, None)
                        continue
                    if not queue or message[0] != queue[0]:
                        continue  # not an item of this call (cannot happen with the in-order protocol)
                    now = time.monotonic()
                    elapsed = (now - head_started[fd]) * 1000
                    status, detail = message[1], message[2]
                    if status == "memory":  # a MemoryError can leave sympy's caches half-built
                        fail_head(worker, (TIMEOUT, f"resource limit: {detail}", elapsed))
                        break
                    item = queue.popleft()
                    inflight_bytes[fd] -= len(line(item))
                    results[item] = (status, detail, elapsed)
                    head_started[fd] = now  # the worker moves on to the next line at once
            now = time.monotonic()
            for worker in list(self._workers):
                fd = worker.fd
                if inflight.get(fd) and now - head_started[fd] >= limit:
                    fail_head(worker, (TIMEOUT, f"math-verify exceeded {limit:g} s; worker killed and replaced",
                                       (now - head_started[fd]) * 1000))
            for fd, started in list(starting.items()):
                if now - started >= self.start_timeout_s:
                    raise RuntimeError(f"a math-verify worker did not start within {self.start_timeout_s:g} s;"
                                       " is the machine overloaded?")
        return results  # type: ignore[return-value]

    def verify_many(self, items: Iterable[tuple[str | None, str]], timeout_s: float | None = None
                    ) -> list[Verdict]:
        """Verdicts for (response, gold) pairs, in order; responses with no final answer are `unparsable`."""
        items = list(items)
        started = time.monotonic()
        answers = [extract_answer(response) for response, _ in items]
        extract_ms = (time.monotonic() - started) * 1000 / max(1, len(items))
        todo = [i for i, answer in enumerate(answers) if answer is not None]
        bad_gold = [i for i in todo if not isinstance(items[i][1], str) or not items[i][1].strip()]
        todo = [i for i in todo if i not in set(bad_gold)]
        checked = self.check_many([(answers[i], str(items[i][1]).strip()) for i in todo], timeout_s)
        verdicts: list[Verdict] = []
        by_item = dict(zip(todo, checked))
        for i, answer in enumerate(answers):
            shown = answer if answer is None or len(answer) <= MAX_ANSWER_CHARS else answer[:MAX_ANSWER_CHARS]
            if answer is None:
                verdicts.append(Verdict(UNPARSABLE, "no final answer found (no \\boxed{} and no 'the answer "
                                        "is ...' after </think>)", None, extract_ms))
            elif i in by_item:
                status, detail, elapsed = by_item[i]
                verdicts.append(Verdict(status, detail, shown, elapsed + extract_ms))
            else:
                verdicts.append(Verdict(ERROR, f"empty or missing gold answer {items[i][1]!r}", shown,
                                        extract_ms))
        return verdicts

    def close(self) -> None:
        for worker in self._workers:
            try:
                worker.process.stdin.close()  # EOF: the worker's loop ends
            except OSError:
                pass
        for worker in self._workers:
            try:
                worker.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            worker.kill()
        self._workers = []

    def __enter__(self) -> "MathVerifierPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # best effort: daemon workers die with the parent anyway
        try:
            if self._workers:
                self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


_shared_pool: MathVerifierPool | None = None
_shared_lock = threading.Lock()


def verify_math(response: str, gold: str, timeout_s: float = 5.0) -> Verdict:
    """Verdict for one response against one gold answer (LaTeX, e.g. `\\frac{1}{2}` or `(3, \\pi/2)`).

    Runs in a process-wide single-worker pool (started on first use); `timeout_s` is wall-clock seconds.
    """
    global _shared_pool
    with _shared_lock:
        if _shared_pool is None:
            _shared_pool = MathVerifierPool(workers=1, timeout_s=timeout_s)
            atexit.register(_shared_pool.close)
        return _shared_pool.verify_many([(response, gold)], timeout_s=timeout_s)[0]
