"""The ``serve`` check: one completion of a real model from the new llama-server."""

from __future__ import annotations

from harness.errors import HarnessError
from harness.smoke import Context, SmokeFailure, decoder, default_model
from harness.smoke.results import ServeResult


def run(ctx: Context) -> ServeResult:
    model = ctx.model or default_model()
    server = ctx.bin_dir / "llama-server"
    if not server.is_file():
        raise SmokeFailure("serve", f"the build has no llama-server ({server})")
    ctx.work.mkdir(parents=True, exist_ok=True)
    try:
        got = decoder.decode(server, model, [], n_predict=8, log_path=ctx.work / "smoke-server.log",
                             prompt="The capital of France is")
    except decoder.Crashed as crash:
        raise SmokeFailure("serve", f"llama-server was killed by {crash.signal}:\n{crash.tail}",
                           details={"signal": crash.signal}) from None
    except HarnessError as exc:
        raise SmokeFailure("serve", str(exc)) from None
    why = decoder.problem(got, 8)
    if why:
        raise SmokeFailure("serve", why)
    if not got.content.strip():
        raise SmokeFailure("serve", "llama-server answered with no text")
    return ServeResult(ok=True, seconds=got.seconds, content=got.content, tokens_per_s=got.tokens_per_s,
                       model=str(model))
