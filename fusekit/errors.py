"""The one exception users see: a problem with their input, said in one line."""


class FusekitError(Exception):
    """Bad input or an impossible request; the CLI prints it as one line and exits 2."""
