"""What tools may write and run: forbidden file extensions, the program allow- and
deny-lists, and the argument forms refused for each program.

Two layers of argument checks. Those in `check_arguments` hold in every mode: they refuse
options that make an allowed program run another program or rewrite its own behaviour
(`find -exec`, `git -c`, `git --upload-pack`, `sort --compress-program`). Restricted mode
(no bubblewrap) adds `check_restricted_arguments`: no inline code (`python -c`), no
absolute or `..` paths, no URLs, because there the program sees the whole host.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from veche.apps.agents.tools.errors import ForbiddenArgument, InvalidArguments

# Lower-case suffixes write_file refuses: native executables and libraries, scripts that
# the OS or a shell runs directly, installers and packages, compiled bytecode.
# fmt: off
FORBIDDEN_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".exe", ".dll", ".so", ".dylib", ".sys", ".drv", ".ocx", ".scr", ".cpl", ".sh", ".bash",
        ".zsh", ".ksh", ".csh", ".fish", ".command", ".bat", ".cmd", ".ps1", ".psm1", ".vbs",
        ".vbe", ".wsf", ".wsh", ".hta", ".lnk", ".bin", ".elf", ".com", ".o", ".a", ".ko", ".out",
        ".msi", ".msp", ".deb", ".rpm", ".apk", ".appimage", ".dmg", ".pkg", ".run", ".jar",
        ".war", ".ear", ".class", ".pyc", ".pyo", ".pyd",
    }
)
# fmt: on

_VERSIONED_LIBRARY = re.compile(r"\.(so|dylib)(\.\d+)+$")

# fmt: off
DEFAULT_ALLOWED_PROGRAMS: frozenset[str] = frozenset(
    {
        "ls", "cat", "head", "tail", "wc", "grep", "find", "sort", "uniq", "diff", "echo", "cut",
        "tr", "stat", "du", "basename", "dirname", "pwd", "date", "true", "false", "mkdir",
        "touch", "cmp", "comm", "nl", "tac", "sha256sum", "md5sum", "python3", "pytest", "git",
    }
)
# fmt: on

# Never run, whatever the allow-list says: privilege, network, destruction, process
# control, shells and launchers that would run an arbitrary program.
# fmt: off
DENIED_PROGRAMS: frozenset[str] = frozenset(
    {
        "sudo", "su", "doas", "pkexec", "runuser", "setpriv", "chroot", "nsenter", "unshare",
        "capsh", "setcap", "chmod", "chown", "chgrp", "chattr", "ln", "curl", "wget", "nc", "ncat",
        "netcat", "socat", "telnet", "ftp", "ssh", "scp", "sftp", "rsync", "rm", "rmdir", "shred",
        "dd", "mkfs", "mke2fs", "fdisk", "parted", "mount", "umount", "losetup", "swapon",
        "swapoff", "truncate", "kill", "pkill", "killall", "reboot", "shutdown", "halt",
        "poweroff", "init", "systemctl", "service", "crontab", "at", "apt", "apt-get", "dpkg",
        "pacman", "yum", "dnf", "rpm", "snap", "pip", "pip3", "insmod", "modprobe", "rmmod",
        "iptables", "nft", "ip", "useradd", "userdel", "usermod", "passwd", "chpasswd", "sh",
        "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox", "env", "xargs",
        "nohup", "setsid", "timeout", "nice", "ionice", "stdbuf", "time", "watch", "script",
        "strace", "ltrace", "gdb", "flock", "prlimit", "bwrap", "perl", "ruby", "node", "lua",
        "php", "tclsh", "expect", "awk", "gawk", "mawk", "sed", "vi", "vim", "emacs", "less",
        "more", "man", "tee",
    }
)
# fmt: on

PYTHON_PROGRAMS = frozenset({"python", "python3"})
# `python -m` modules restricted mode still permits.
RESTRICTED_PYTHON_MODULES = frozenset({"pytest", "unittest", "json.tool", "py_compile"})

_FIND_DENIED = frozenset(
    {"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0", "-fprintf", "-fls"}
)

# Git subcommands the agent may use; aliases and everything else are refused.
# fmt: off
GIT_SUBCOMMANDS = frozenset(
    {
        "status", "log", "diff", "show", "add", "commit", "init", "branch", "checkout", "switch",
        "restore", "reset", "rm", "mv", "tag", "stash", "merge", "rebase", "cherry-pick", "revert",
        "blame", "grep", "ls-files", "rev-parse", "describe", "shortlog", "clone", "fetch", "pull",
        "push", "remote", "apply", "format-patch", "version", "help", "rev-list", "cat-file",
        "show-ref", "clean",
    }
)
# fmt: on
_GIT_GLOBAL_ALLOWED = frozenset({"--no-pager", "-P", "--version", "--help", "--no-replace-objects"})
_GIT_DENIED_OPTIONS = (
    "--upload-pack",
    "--receive-pack",
    "--exec",
    "--template",
    "--config",
    "--config-env",
    "--separate-git-dir",
    "--ext-diff",
    "--git-dir",
    "--work-tree",
    "--output-directory",
)

# Git configuration forced through the environment (it outranks the repository's own
# config): nothing git does may start a pager, editor, hook, fsmonitor or ssh.
GIT_FORCED_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.fsmonitor", "false"),
    ("core.hooksPath", "/dev/null"),
    ("core.pager", "cat"),
    ("core.editor", "false"),
    ("core.sshCommand", "false"),
    ("core.askPass", "false"),
    ("core.symlinks", "false"),
    ("sequence.editor", "false"),
    ("credential.helper", ""),
    ("diff.external", ""),
    ("user.name", "Veche agent"),
    ("user.email", "agent@veche.invalid"),
)


def forbidden_extension(name: str) -> str | None:
    """The forbidden suffix `name` ends with, if any: case-insensitive, ignoring trailing
    dots and spaces, and catching versioned libraries (`libx.so.1`)."""
    lowered = name.casefold().rstrip(". ")
    if _VERSIONED_LIBRARY.search(lowered):
        return ".so"
    suffix = lowered[lowered.rfind(".") :] if "." in lowered else ""
    return suffix if suffix in FORBIDDEN_EXTENSIONS else None


def _short_cluster(argument: str) -> str:
    return argument[1:] if argument.startswith("-") and not argument.startswith("--") else ""


def _check_git(arguments: Sequence[str]) -> None:
    index = 0
    while index < len(arguments) and arguments[index].startswith("-"):
        option = arguments[index]
        if option not in _GIT_GLOBAL_ALLOWED:
            raise ForbiddenArgument(f"git's global option {option!r} is not allowed")
        index += 1
    if index == len(arguments):
        return
    subcommand = arguments[index]
    if subcommand not in GIT_SUBCOMMANDS:
        raise ForbiddenArgument(f"git {subcommand!r} is not an allowed subcommand")
    for argument in arguments[index + 1 :]:
        if argument.startswith(_GIT_DENIED_OPTIONS):
            raise ForbiddenArgument(f"git option {argument!r} is not allowed")
        if subcommand in {"clone", "fetch", "pull", "ls-remote"} and argument == "-u":
            raise ForbiddenArgument("git -u (--upload-pack) is not allowed")
        if subcommand == "rebase" and (argument == "-x" or argument.startswith("--exec")):
            raise ForbiddenArgument("git rebase --exec is not allowed")
        if subcommand == "clone" and argument.startswith("--recurse"):
            raise ForbiddenArgument("git clone --recurse-submodules is not allowed")


def check_arguments(program: str, arguments: Sequence[str]) -> None:
    """Refuse argument forms that are dangerous in every isolation mode."""
    for argument in arguments:
        if "\x00" in argument:
            raise InvalidArguments("An argument contains a NUL character")
    if program == "find":
        for argument in arguments:
            if argument in _FIND_DENIED:
                raise ForbiddenArgument(f"find {argument} is not allowed")
    elif program == "sort":
        for argument in arguments:
            if argument.startswith("--compress-prog"):
                raise ForbiddenArgument("sort --compress-program is not allowed")
    elif program == "git":
        _check_git(arguments)


def _check_python_restricted(arguments: Sequence[str]) -> None:
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if argument == "-":
            raise ForbiddenArgument("python reading code from stdin is not allowed here")
        if argument == "--" or not argument.startswith("-"):
            return
        if argument.startswith("--"):
            index += 1
            continue
        cluster = argument[1:]
        for position, flag in enumerate(cluster):
            if flag == "c":
                raise ForbiddenArgument("python -c is not allowed in restricted mode")
            if flag == "m":
                module = cluster[position + 1 :] or (
                    arguments[index + 1] if index + 1 < len(arguments) else ""
                )
                if module not in RESTRICTED_PYTHON_MODULES:
                    raise ForbiddenArgument(f"python -m {module} is not allowed in restricted mode")
                return
            if flag in {"W", "X"}:
                if position == len(cluster) - 1:
                    index += 1
                break
        index += 1


def _looks_like_outside_path(argument: str) -> bool:
    values = [argument]
    if "=" in argument:
        values.append(argument.split("=", 1)[1])
    short = _short_cluster(argument)
    if len(short) > 1:
        values.append(short[1:])
    for value in values:
        if value.startswith(("/", "~")) or "://" in value:
            return True
        if ".." in value.split("/"):
            return True
    return False


def check_restricted_arguments(program: str, arguments: Sequence[str]) -> None:
    """Refuse, when nothing isolates the command, argument forms that run inline code
    or reach outside the workspace."""
    if program in PYTHON_PROGRAMS:
        _check_python_restricted(arguments)
    for argument in arguments:
        if _looks_like_outside_path(argument):
            raise ForbiddenArgument(
                f"{argument!r} looks like a path outside the workspace or a URL"
            )
