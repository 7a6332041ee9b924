"""The rule for kernel options a renter forwards to its remote kernel (core.kernel_args)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jupyter_gpumarket.core import control
from jupyter_gpumarket.core.kernel_args import (
    ALLOWED_FLAGS,
    MAX_KERNEL_ARG_BYTES,
    MAX_KERNEL_ARGS,
    check_kernel_args,
)
from jupyter_gpumarket.exceptions import ProtocolError

KEY = "k" * 32

ACCEPTED = [
    "--HistoryManager.hist_file=:memory:",  # nbclient's
    '--IPKernelApp.exec_lines=["x=41"]',
    "--IPKernelApp.exec_lines=import os; os.chdir('/tmp/../x')",  # code, run inside the kernel
    "--InteractiveShellApp.code_to_run=open('/etc/hostname').read()",
    "--IPKernelApp.exec_files=['setup.py', 'lib/init.py']",
    "--IPKernelApp.extensions=['autoreload']",
    "--InlineBackend.figure_formats=['svg']",
    "--HistoryManager.hist_file=history/h.sqlite",
    "--Application.log_level=10",
    "--debug",
    "--matplotlib=inline",
    "--colors=nocolor",
]

REFUSED = [
    ("-f", "not a kernel option"),
    ("/etc/passwd", "not a kernel option"),
    ("--f=/etc/passwd", "not a kernel option"),
    ("--ip=0.0.0.0", "not a kernel option"),
    ("--", "not a kernel option"),
    ("script.py", "not a kernel option"),
    ("--HistoryManager.hist_file", "not a kernel option"),  # the value goes in the same item
    ("--show-config", "not a kernel option"),
    ("--ConnectionFileMixin.connection_file=/tmp/x.json", "connection_file"),
    ("--IPKernelApp.connection_file=k.json", "connection_file"),
    ("--KernelApp.transport=tcp", "transport"),
    ("--IPKernelApp.shell_port=5555", "shell_port"),
    ("--Session.key=abc", "'key'"),
    ("--Session.signature_scheme=hmac-md5", "signature_scheme"),
    ("--HistoryManager.hist_file=/etc/passwd", "outside the kernel's working dir"),
    ("--HistoryManager.hist_file=~/h.sqlite", "outside"),
    ("--HistoryManager.hist_file=../h.sqlite", "outside"),
    ("--HistoryManager.hist_file=a/../../h.sqlite", "outside"),
    ("--HistoryManager.hist_file='/etc/passwd'", "outside"),  # traitlets strips the quotes
    ("--IPKernelApp.exec_files=['ok.py', '/etc/x.py']", "outside"),
    ('--IPKernelApp.exec_files=["../x.py"]', "outside"),
    ("--BaseIPythonApplication.profile_dir=/root/.ipython", "outside"),
    ("--InlineBackend.rc={'savefig.directory': '/etc'}", "outside"),
    ("--IPKernelApp.exec_lines=x\0y", "NUL"),
    ("--IPKernelApp.exec_lines=\ud800", "UTF-8"),
    ("--IPKernelApp.exec_lines=" + "x" * MAX_KERNEL_ARG_BYTES, "bytes, over"),
]


@pytest.mark.parametrize("item", ACCEPTED)
def test_options_a_local_kernel_takes_are_accepted_and_kept_as_given(item: str) -> None:
    assert check_kernel_args([item]) == (item,)
    msg = control.StartKernel(key=KEY, kernel_args=(item,))
    assert control.parse_agent_message(control.dump(msg)) == msg


@pytest.mark.parametrize(("item", "message"), REFUSED, ids=range(len(REFUSED)))
def test_refused_items_name_the_option_and_what_is_allowed(item: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        check_kernel_args(["--debug", item])
    assert "kernel_args[1]" in str(info.value)
    with pytest.raises(ProtocolError, match=r"start_kernel\.kernel_args"):
        control.StartKernel(key=KEY, kernel_args=["--debug", item])  # type: ignore[arg-type]


def test_the_list_is_bounded_and_typed() -> None:
    check_kernel_args(["--debug"] * MAX_KERNEL_ARGS)
    with pytest.raises(ProtocolError, match=f"more than the {MAX_KERNEL_ARGS}"):
        check_kernel_args(["--debug"] * (MAX_KERNEL_ARGS + 1))
    for bad in ("--debug", {"--debug": 1}, None, 3):
        with pytest.raises(ProtocolError, match="must be a list of strings"):
            check_kernel_args(bad)
    with pytest.raises(ProtocolError, match="must be a string"):
        check_kernel_args([["--debug"]])


def test_an_empty_list_is_not_sent_so_older_agents_read_the_message() -> None:
    assert b"kernel_args" not in control.dump(control.StartKernel(key=KEY))
    raw = control.dump(control.StartKernel(key=KEY, kernel_args=("--debug",)))
    assert b'"kernel_args":["--debug"]' in raw


def test_a_raw_message_with_a_refused_option_fails_to_parse() -> None:
    raw = b'{"op":"start_kernel","key":"%s","kernel_args":["-f","/etc/passwd"]}' % KEY.encode()
    with pytest.raises(ProtocolError, match=r"kernel_args\[0\] '-f'"):
        control.parse_agent_message(raw)


_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
_items = st.one_of(
    st.text(max_size=60),
    st.sampled_from(sorted(ALLOWED_FLAGS)),
    st.builds(lambda c, t, v: f"--{c}.{t}={v}", _names, _names, st.text(max_size=60)),
    st.builds(lambda v: f"--HistoryManager.hist_file={v}", st.text("/.~'\"[]ab", max_size=12)),
)


@given(st.one_of(st.lists(_items, max_size=8), st.text(max_size=20), st.integers()))
def test_never_raises_anything_but_the_projects_error_and_accepted_items_round_trip(
    args: object,
) -> None:
    try:
        checked = check_kernel_args(args)
    except ProtocolError:
        return
    assert list(checked) == args
    msg = control.StartKernel(key=KEY, kernel_args=checked)
    assert control.parse_agent_message(control.dump(msg)).kernel_args == checked
