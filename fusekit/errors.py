"""The one exception users see: a problem with their input, said in one line."""


class FusekitError(Exception):
    """Bad input or an impossible request; the CLI prints it as one line and exits 2."""


class InputsNeeded(FusekitError):
    """fusekit cannot make up inputs the model runs on; the CLI adds how to give them."""
