"""The model pipeline: a recipe's ``model:`` section and its build -> GGUF files.

``source``     where the model comes from (a local directory, a GGUF or split set, or a Hugging
               Face repo id), its locked revision (:mod:`harness.source.hub` resolves it for the lock),
               the filtered ``snapshot_download`` and the remote safetensors metadata
``checkpoint`` what a HF checkpoint holds: architecture, MTP layers, tensor counts and sizes
``tools``      the recipe's published build: llama-quantize, llama-imatrix, the converter, identity
``plan``       the options of one run and the context every step reads
``preflight``  before anything runs: tools, architecture, quant types, disk space
``qtypes``     llama-quantize's file types (from its --help): bits per weight, which need an imatrix
``cache``      digests (size + mtime -> sha256, cached), sidecars, temp outputs (files or split
               sets) beside targets
``rules``      ``--tensor-type`` rules keeping the MTP layers at ``mtp_type``
``steps/``     the cached units: download, convert, imatrix, quantize (one module each)
``progress``   rich progress bars fed by the tools' own output lines
``summary``    the table at the end: file, type, size, real bits per weight, time
``run``        runs the steps in order under the model directory's lock
``command``    the arguments and output ``harness convert|imatrix|quantize|pipeline`` share
"""
