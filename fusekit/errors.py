"""The one exception users see: a problem with their input, said in one line."""


def first_line(e: Exception) -> str:
    """Another library's exception as one short line for a FusekitError (they can carry long C++ traces)."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


class FusekitError(Exception):
    """Bad input or an impossible request; the CLI prints it as one line and exits 2."""


class InputsNeeded(FusekitError):
    """fusekit cannot make up inputs the model runs on; the CLI adds how to give them."""
