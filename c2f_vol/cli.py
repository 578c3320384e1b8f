"""What every command-line tool shares: the console's logging policy, `run`, and `Progress`.

The console shows this project's messages and the libraries' warnings and
errors. Libraries' INFO lines (orbax's manager options, TFDS's dataset info
and shard writes, ...) and orbax's warnings (a failed restore is reported by
`checkpoint.Manager.restore_newest` in one line of its own) are dropped unless
`--verbosity` is given, which restores absl's full output (`--verbosity=0`
all INFO, `1` and up also debug lines).
Messages are one short line each: `HH:MM:SS message`, or `WARNING: message`.
"""

from __future__ import annotations

import logging as pylog
import os
import sys
import tempfile
import time

import tqdm
from absl import app, flags, logging

from c2f_vol import hostcpu
from c2f_vol.errors import UserError

# What the tools report in one line: the project's user errors and OS errors about a path the user named.
USER_ERRORS = (UserError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
               NotADirectoryError)

_PROJECT_DIRS = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), d) + os.sep
                      for d in ("c2f_vol", "tools", "benchmarks"))


class _ProjectInfoOnly(pylog.Filter):
    """Passes this project's lines, and the libraries' warnings and errors, except orbax's warnings: on a
    failed restore `checkpoint.Manager.restore_newest` reports the step and cause in one line of its own."""

    def filter(self, record: pylog.LogRecord) -> bool:
        path = os.path.abspath(record.pathname)
        if path.startswith(_PROJECT_DIRS):
            return True
        if f"{os.sep}orbax{os.sep}" in path:
            return record.levelno >= pylog.ERROR
        return record.levelno >= pylog.WARNING


class _ShortFormatter(pylog.Formatter):
    def format(self, record: pylog.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        if record.levelno >= pylog.WARNING:
            return f"{record.levelname}: {msg}"
        return f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {msg}"


def configure_console(verbose: bool) -> None:
    """Short lines on the console; without `verbose`, libraries' INFO lines are dropped."""
    handler = logging.get_absl_handler().python_handler
    for f in list(handler.filters):
        if isinstance(f, _ProjectInfoOnly):
            handler.removeFilter(f)
    if verbose:
        handler.setFormatter(logging.PythonFormatter())
    else:
        handler.setFormatter(_ShortFormatter())
        handler.addFilter(_ProjectInfoOnly())


# What TensorFlow's C++ side prints on every import, before any logging setting applies.
_TF_IMPORT_NOTICES = ("All log messages before absl::InitializeLog() is called", "oneDNN custom operations are on",
                      "cpu_feature_guard.cc", "To enable the following instructions",
                      "rebuild TensorFlow with the appropriate compiler flags")


def import_tensorflow() -> None:
    """Import TensorFlow with its start-up notices held back; anything else it prints is passed on."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if not is_tf_import_notice(line):
                    print(line, file=sys.stderr)


def is_tf_import_notice(line: str) -> bool:
    return not line.strip() or any(n in line for n in _TF_IMPORT_NOTICES)


def run(main, *, tensorflow: bool = True) -> None:
    """`absl.app.run(main)` with the console policy above applied after flags are parsed.

    `tensorflow`: the tool needs TensorFlow, imported first through `import_tensorflow`.
    A tool run as a script (`main` defined in `__main__`) first restarts itself with malloc's huge
    pages where they are off (`hostcpu.restart_with_huge_pages`; GLIBC_TUNABLES=glibc.malloc.hugetlb=0
    opts out).
    """
    if getattr(main, "__module__", None) == "__main__":
        hostcpu.restart_with_huge_pages()

    def wrapped(argv):
        verbose = flags.FLAGS["verbosity"].present > 0
        configure_console(verbose=verbose)
        hostcpu.tune_cpu_backend()  # before anything starts JAX's CPU backend
        if hostcpu.TUNABLES_BEFORE_ENV in os.environ:  # this process or a parent tool restarted with it
            logging.info("running with GLIBC_TUNABLES=%s (malloc's huge pages, hostcpu.restart_with_huge_pages)",
                         os.environ.get("GLIBC_TUNABLES"))
        try:
            if tensorflow and not verbose:
                import_tensorflow()
            return main(argv)
        except USER_ERRORS as e:
            print(f"error: {_one_line(e)}", file=sys.stderr)
            sys.exit(2)

    app.run(wrapped, flags_parser=_parse_flags)


def _parse_flags(argv):
    """absl's flag parsing, with every mistake (an unknown flag, a bad value, a missing config file, a
    misspelt `--config.x` override) reported in one line and exit code 2."""
    try:
        rest = flags.FLAGS(argv)
        for name in flags.FLAGS:  # a config file flag that failed to load raises only when it is used
            getattr(getattr(flags.FLAGS, name), "lock", None)
        return rest
    except flags.Error as e:
        text = str(e)
    except (AttributeError, KeyError, OSError, TypeError, ValueError) as e:  # ml_collections' config flags
        text = str(e.__cause__ or e)
    lines = [l for l in text.strip("'\"").replace("\\n", "\n").splitlines() if l.strip()]
    if any(l.startswith("Traceback") for l in lines):  # a config file's own error, quoted with its traceback
        lines = [lines[0].rstrip(":") + ":", lines[-1]]
    message = " ".join(" ".join(lines).replace("\\'", "'").split())
    print(f"error: {message} (see {os.path.basename(argv[0])} --help)", file=sys.stderr)
    sys.exit(2)


def _one_line(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    return " ".join(text.replace("\\n", " ").split())


class Progress:
    """Progress over a count of items, for a person: a tqdm bar on a terminal, else a plain line now and then.

    Without a terminal (a pipe, a log file) it prints a line at each tenth of `total`, at most one
    per `min_gap_s` seconds (so a short job prints only its last), and a final line; with `total`
    None, a line every `every_s` seconds.
    """

    min_gap_s = 5.0
    every_s = 60.0

    def __init__(self, desc: str, total: int | None, unit: str = "items"):
        self._desc, self._total, self._unit, self._file = desc, total, unit, sys.stderr
        # disable=None: tqdm draws only on a terminal; elsewhere `_line` prints instead.
        self._bar = tqdm.tqdm(desc=desc, total=total, unit=f" {unit}", file=self._file, disable=None,
                              dynamic_ncols=True)
        self._lines = bool(self._bar.disable)  # tqdm sets disable to True when it closes, so keep it here
        self._n, self._t0 = 0, time.monotonic()
        self._printed_n, self._printed_tenth, self._printed_t = 0, 0, self._t0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, *_) -> None:
        self._bar.close()
        if self._lines and exc_type is None and self._n != self._printed_n:
            self._line()

    def count(self, items):
        """Yield from `items`, counting each one."""
        for item in items:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self._n += n
        if not self._lines:
            self._bar.update(n)
            return
        now = time.monotonic()
        if self._total:
            tenth = 10 * self._n // self._total
            if self._n >= self._total or (tenth > self._printed_tenth and now - self._printed_t >= self.min_gap_s):
                self._line()
        elif now - self._printed_t >= self.every_s:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        if self._total:
            done = f"{self._n}/{self._total} {self._unit} ({self._n / self._total:.0%})"
            self._printed_tenth = 10 * self._n // self._total
        else:
            done = f"{self._n} {self._unit}"
        self._printed_n, self._printed_t = self._n, now
        print(f"{self._desc}: {done}, {now - self._t0:.0f} s", file=self._file, flush=True)
