"""The torch side: everything that needs torch or diffusers, one package per command.

`img2img` (the build's diffusion tile engine), `canvas` (mixture-of-diffusers canvases),
`esrgan` (Real-ESRGAN upscaling), with `models` (loading Stable Diffusion pipelines) and
`runtime` (torch threads, CUDA devices) shared. The torch-free core reaches it only through
`hypermosaic.registry`, which imports a submodule the first time its component is needed;
nothing is imported here, since importing diffusers takes seconds.
"""
