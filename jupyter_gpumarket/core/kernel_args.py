"""Kernel options a renter may pass to its remote kernel (``extra_arguments``), and the rule.

A local ``KernelManager.start_kernel(extra_arguments=[...])`` appends options to the kernel's
command line; nbclient passes ``--HistoryManager.hist_file=:memory:`` this way, papermill and
others pass their own. The renter sends them in ``start_kernel.kernel_args``; the agent appends
them to ``python -m ipykernel_launcher -f <its connection file>`` inside the sandbox. Both sides
apply :func:`check_kernel_args`; the agent never trusts the renter's check.

The rule (anything else is refused with a :class:`ProtocolError` naming the option):

- at most :data:`MAX_KERNEL_ARGS` items of at most :data:`MAX_KERNEL_ARG_BYTES` bytes of UTF-8
  each, no NUL;
- each item is ``--Class.trait=value`` (ASCII names, one ``=``, value in the same item), or one
  of the ipykernel flags in :data:`ALLOWED_FLAGS`, or ``--alias=value`` for an alias in
  :data:`ALLOWED_ALIASES`. So no executable, no positional argument, no ``--`` and no second
  ``-f``: the command stays the agent's;
- options that decide how the agent reaches the kernel are the agent's:
  ``connection_file``, ``ip``, ``transport``, the five ports, the session ``key``/``keyfile``/
  ``signature_scheme`` (:data:`AGENT_TRAITS`, refused on any class);
- a value (or, in a ``[...]``/``{...}`` literal, any string in it; quotes stripped as traitlets
  does) that names a path must stay in the kernel's working dir: no leading ``/`` or ``~``
  (traitlets expands ``~``), no ``..`` component. Relative paths and specials such as
  ``:memory:`` pass. The values of :data:`CODE_TRAITS` are Python code the kernel runs, as a cell
  would, inside the sandbox: they are not read as paths.

Options are argv items, readable by every user of the provider's machine in ``/proc``: fine for
options, never for secrets (those go in the kernel's environment).
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Iterator

from jupyter_gpumarket.exceptions import ProtocolError

__all__ = [
    "AGENT_TRAITS",
    "ALLOWED_ALIASES",
    "ALLOWED_FLAGS",
    "CODE_TRAITS",
    "MAX_KERNEL_ARGS",
    "MAX_KERNEL_ARG_BYTES",
    "check_kernel_args",
]

MAX_KERNEL_ARGS = 64
MAX_KERNEL_ARG_BYTES = 4096

# ipykernel flags (no value) and aliases (``--name=value``) that change only the kernel itself.
ALLOWED_FLAGS = frozenset(
    {
        "--debug",
        "--quiet",
        "--no-stdout",
        "--no-stderr",
        "--matplotlib",
        "--pylab",
        "--pdb",
        "--no-pdb",
        "--pprint",
        "--no-pprint",
        "--nosep",
        "--autoindent",
        "--no-autoindent",
        "--automagic",
        "--no-automagic",
        "--color-info",
        "--no-color-info",
    }
)
ALLOWED_ALIASES = frozenset(
    {"matplotlib", "pylab", "gui", "colors", "log-level", "autocall", "cache-size", "theme"}
)
AGENT_TRAITS = frozenset(
    {
        "connection_file",
        "ip",
        "transport",
        "shell_port",
        "iopub_port",
        "stdin_port",
        "control_port",
        "hb_port",
        "key",
        "keyfile",
        "signature_scheme",
        "parent_handle",
        "interrupt",
        "show_config",
        "show_config_json",
    }
)
CODE_TRAITS = frozenset({"exec_lines", "code_to_run"})

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_CLASS_TRAIT = re.compile(rf"--({_NAME}(?:\.{_NAME})+)=(.*)", re.DOTALL)
_ALIAS = re.compile(r"--([a-z][a-z-]*)=(.*)", re.DOTALL)
_LITERAL_DEPTH = 3
_HOW = (
    "give kernel options as --Class.trait=value (e.g. --HistoryManager.hist_file=:memory:), "
    "--alias=value for one of "
    + ", ".join(sorted(ALLOWED_ALIASES))
    + ", or a flag of "
    + ", ".join(sorted(ALLOWED_FLAGS))
)


def _unquoted(text: str) -> Iterator[str]:
    """``text`` and each layer under matching surrounding quotes (traitlets strips one)."""
    yield text
    t = text.strip()
    while len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        t = t[1:-1].strip()
        yield t


def _strings(value: object, depth: int) -> Iterator[str]:
    """Every string a value may be read as: itself, unquoted, and those in a literal."""
    if isinstance(value, str):
        for layer in _unquoted(value):
            yield layer
            if depth > 0 and layer[:1] in ("[", "(", "{"):
                try:  # what traitlets does with a container literal
                    with warnings.catch_warnings():  # invalid escapes warn: not ours to show
                        warnings.simplefilter("ignore")
                        parsed = ast.literal_eval(layer)
                except Exception:  # not a literal (any reason): read it as text
                    continue
                yield from _strings(parsed, depth - 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from _strings(item, depth)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k, depth)
            yield from _strings(v, depth)


def _leaves_workdir(text: str) -> bool:
    t = text.strip()
    if t.startswith(("/", "~", "\\")):
        return True
    return ".." in t.replace("\\", "/").split("/")


def _check_value(shown: str, trait: str, value: str) -> None:
    if trait in CODE_TRAITS:
        return
    for s in _strings(value, _LITERAL_DEPTH):
        if _leaves_workdir(s):
            raise ProtocolError(
                f"{shown} names a path outside the kernel's working dir ({s[:80]!r}): "
                "use a path relative to the notebook's directory, without '..'"
            )


def _check_item(index: int, item: object, what: str) -> str:
    if not isinstance(item, str):
        raise ProtocolError(f"{what}[{index}] must be a string, got {type(item).__name__}")
    shown = f"{what}[{index}] {item[:40]!r}"  # short: it ends up in close reasons
    if "\0" in item:
        raise ProtocolError(f"{shown} holds a NUL byte: remove it")
    try:
        size = len(item.encode("utf-8"))
    except UnicodeEncodeError:
        raise ProtocolError(f"{shown} is not valid UTF-8 text") from None
    if size > MAX_KERNEL_ARG_BYTES:
        raise ProtocolError(
            f"{shown} is {size} bytes, over the {MAX_KERNEL_ARG_BYTES} a kernel option may "
            "have: put long code or data in a file of the notebook's directory"
        )
    if item in ALLOWED_FLAGS:
        return item
    found = _CLASS_TRAIT.fullmatch(item)
    if found is not None:
        names = found.group(1).split(".")
        agent_owned = [n for n in names if n in AGENT_TRAITS]
        if agent_owned:
            raise ProtocolError(
                f"{shown} sets {agent_owned[0]!r}, which the provider's agent decides (it "
                "owns the kernel's connection file, transport, ports and key): drop the option"
            )
        _check_value(shown, names[-1], found.group(2))
        return item
    alias = _ALIAS.fullmatch(item)
    if alias is not None and alias.group(1) in ALLOWED_ALIASES:
        _check_value(shown, alias.group(1), alias.group(2))
        return item
    raise ProtocolError(f"{shown} is not a kernel option the provider accepts: {_HOW}")


def check_kernel_args(args: object, what: str = "kernel_args") -> tuple[str, ...]:
    """The renter's kernel options as a tuple, or ProtocolError naming the first refused one."""
    if not isinstance(args, (list, tuple)):
        raise ProtocolError(f"{what} must be a list of strings, got {type(args).__name__}")
    if len(args) > MAX_KERNEL_ARGS:
        raise ProtocolError(
            f"{what} has {len(args)} kernel options, more than the {MAX_KERNEL_ARGS} a kernel "
            "may get: put settings in an IPython config file in the notebook's directory"
        )
    return tuple(_check_item(i, item, what) for i, item in enumerate(args))
