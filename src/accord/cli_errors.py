"""How the ``accord`` command line fails: one line on stderr, ``error (<code>): <message>``, then exit 1
for a refusal or 2 for a usage error (130 after Ctrl-C, quietly).

Commands raise; :func:`accord.cli.main` catches whatever comes out of the typer app and hands it to
:func:`describe`, which maps it to ``(code, message, status)``: a :class:`CliError` (the CLI's own
refusals and usage errors), an ``AccordError`` (the hub's or the server's, with its stable ``code``), a
server that cannot be reached (``unreachable``, naming the URL), a locked store (``store_locked``,
naming the pid recorded in the lock file), an ``OSError`` (``io_error``), and anything else
(``internal``). No traceback is printed unless ``--debug`` (or ``ACCORD_DEBUG=1``) asks for one.
"""

from __future__ import annotations

from typing import Any

#: exit statuses
REFUSED = 1
USAGE = 2
INTERRUPTED = 130


class CliError(Exception):
    """A failure the CLI reports itself: ``error (<code>): <message> — <hint>``, exit ``status``."""

    def __init__(self, code: str, message: str, *, hint: str | None = None, status: int = REFUSED) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.status = status


def usage(message: str, *, hint: str | None = None) -> CliError:
    """A usage error (exit 2): the command line itself is wrong, nothing was looked at or changed."""
    return CliError("usage", message, hint=hint, status=USAGE)


def _server_of(exc: Any) -> str:
    """``scheme://host:port`` of the request an httpx error was about (or ``the server``)."""
    try:
        url = exc.request.url
        return f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"
    except Exception:  # an httpx error without its request
        return "the server"


def describe(exc: BaseException) -> tuple[str, str, int]:
    """``(code, one-line message, exit status)`` for an exception that ended a command."""
    import httpx
    import typer
    from typer._click.exceptions import ClickException, UsageError  # typer's own copy of click

    from .model.errors import AccordError

    if isinstance(exc, CliError):
        message = exc.message + (f" — {exc.hint}" if exc.hint else "")
        return exc.code, _one_line(message), exc.status
    if isinstance(exc, UsageError):
        ctx = exc.ctx
        hint = f" — see `{ctx.command_path} --help`" if ctx is not None else ""
        return "usage", _one_line(exc.format_message() + hint), USAGE
    if isinstance(exc, typer.Abort):
        return "aborted", "aborted", REFUSED
    if isinstance(exc, ClickException):
        return "error", _one_line(exc.format_message()), exc.exit_code or REFUSED
    if isinstance(exc, AccordError):
        if exc.code == "store_locked":
            return exc.code, _one_line(_locked(exc.details, exc.message)), REFUSED
        return exc.code, _one_line(exc.message), REFUSED
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return "usage", _one_line(f"not a server URL (give --url http://HOST:PORT): {exc}"), USAGE
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        where = _server_of(exc)
        return (
            "unreachable",
            f"cannot reach the server at {where} — is `accord serve` running there? "
            "(--url or ACCORD_URL picks another)",
            REFUSED,
        )
    if isinstance(exc, httpx.TimeoutException):
        return "timeout", f"the server at {_server_of(exc)} did not answer in time", REFUSED
    if isinstance(exc, httpx.HTTPError):
        return "transport_error", _one_line(f"talking to {_server_of(exc)}: {exc}"), REFUSED
    if isinstance(exc, OSError):
        what = f"{exc.filename}: " if exc.filename is not None else ""
        return "io_error", _one_line(f"{what}{exc.strerror or exc}"), REFUSED
    return (
        "internal",
        _one_line(f"{type(exc).__name__}: {exc} — this is a bug; `accord --debug …` shows the traceback"),
        REFUSED,
    )


def _locked(details: dict[str, Any], message: str) -> str:
    path, pid = details.get("path"), details.get("pid")
    if not path:
        return message
    who = f"another process (pid {pid})" if pid and pid != "unknown" else "another process"
    return (
        f"{path} is locked by {who} — is `accord serve` running on it? Stop it first "
        "(`accord replay` and `accord audit verify` can read the store meanwhile)"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


__all__ = ["INTERRUPTED", "REFUSED", "USAGE", "CliError", "describe", "usage"]
