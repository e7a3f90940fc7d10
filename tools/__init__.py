"""Developer tools run from the repository root (`python -m tools.<name>`), not part of the installed
library: tools.kernel_aot, the ahead-of-time compile check of the fused loss kernels."""
