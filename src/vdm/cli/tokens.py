"""``vdm token``: issue, revoke and list the JWTs of the gRPC service."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="JWTs for the gRPC LLMProxy service.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)


def _when(seconds: object) -> str:
    if not isinstance(seconds, int):
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


@app.command("generate")
def generate(
    subject: Annotated[str, typer.Argument(help="Who the token is for (its 'sub').")],
    expires_in: Annotated[
        str,
        typer.Option("--expires-in", help="Lifetime: 3600s, 90min, 12h, 30d, 2w, 6m (months), 1y."),
    ] = "30d",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write the token to this file (mode 0600) instead of stdout."
        ),
    ] = None,
) -> None:
    """Issue a token signed with the server's secret."""
    from vdm.auth.jwt import issue, load_secret, parse_duration
    from vdm.auth.token_store import IssuedTokens
    from vdm.cli.common import settings_or_exit as _settings

    try:
        seconds = parse_duration(expires_in)
    except ValueError as exc:
        errors.print(f"--expires-in: {exc}", markup=False)
        raise typer.Exit(2) from None
    if not subject.strip():
        errors.print("SUBJECT must not be empty")
        raise typer.Exit(2)
    token, claims = issue(load_secret(_settings().grpc), subject.strip(), seconds)
    IssuedTokens.default().record(claims)
    if output is None:
        print(token)
    else:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        output.chmod(0o600)
    errors.print(
        f"token for '{claims['sub']}' (jti {claims['jti']}), expires "
        f"{_when(claims['exp'])}" + (f", written to {output}" if output else ""),
        markup=False,
    )


@app.command("revoke")
def revoke(jti: Annotated[str, typer.Argument(help="The token's id (its 'jti').")]) -> None:
    """Revoke a token: running servers refuse it within a second or so."""
    from vdm.auth.token_store import RevocationList

    jti = jti.strip()
    if not jti or any(c.isspace() for c in jti):
        errors.print("JTI must be one word (see `vdm token list`)")
        raise typer.Exit(2)
    if RevocationList.default().revoke(jti):
        console.print(f"revoked {jti}", markup=False)
    else:
        console.print(f"{jti} was already revoked", markup=False)


@app.command("list")
def list_tokens(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The tokens issued here (never the tokens themselves) and whether they still work."""
    from vdm.auth.token_store import IssuedTokens, RevocationList, is_expired
    from vdm.cli import output

    revocations = RevocationList.default()
    revocations.load()
    records = []
    for entry in IssuedTokens.default().entries():
        state = (
            "revoked"
            if revocations.is_revoked(entry["jti"])
            else "expired"
            if is_expired(entry)
            else "active"
        )
        records.append(
            {
                "jti": entry["jti"],
                "subject": str(entry.get("sub", "")),
                "issued_at": entry.get("iat"),
                "expires_at": entry.get("exp"),
                "state": state,
            }
        )
    if as_json:
        output.emit_json(records)
        return
    output.table(
        ["jti", "subject", "issued", "expires", "state"],
        [
            [r["jti"], r["subject"], _when(r["issued_at"]), _when(r["expires_at"]), r["state"]]
            for r in records
        ],
        whole={"jti"},  # copied whole into `revoke`
    )
