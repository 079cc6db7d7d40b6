"""`python -m batchrun.service`: the serve command on its own."""

from .command import serve

serve(prog_name="python -m batchrun.service")
