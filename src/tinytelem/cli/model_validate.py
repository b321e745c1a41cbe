"""``tinytelem model validate``: structure, storage types and the fit on a platform."""

from __future__ import annotations

import json
import sys

import click

__all__ = ["validate"]


@click.command("validate")
@click.argument("model_spec", metavar="MODEL")
@click.option("--platform", help="Check flash and RAM against this platform (see "
              "`tinytelem platforms list`).")
@click.option("--context", type=int, help="Context length to budget the KV cache for "
              "[default: the model's seq_len].")
@click.option("--kv-bits", type=click.Choice(["32", "16", "8"]), default="32",
              show_default=True, help="KV-cache element width.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
def validate(model_spec: str, platform: str | None, context: int | None, kv_bits: str,
             as_json: bool) -> None:
    """Check MODEL's structure and types, and whether it fits a platform (exit 1 if not)."""
    from tinytelem.models.formats import open_model
    from tinytelem.models.validate import render_report, validate_model

    rep = validate_model(open_model(model_spec), platform, context, int(kv_bits))
    if as_json:
        click.echo(json.dumps(rep.to_dict(), indent=2))
    else:
        click.echo(render_report(rep))
    if not rep.fits:
        sys.exit(1)
