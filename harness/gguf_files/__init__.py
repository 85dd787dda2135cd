"""GGUF files on disk: read and validate them, find their MTP layers, audit and operate on them.

``reader``     open one GGUF file with bounded reads and validate it before anything trusts it
``contents``   what a validated file holds: metadata entries, arrays, tensor infos, memory-mapped data
``ggml_types`` the ggml tensor type table (block size, bytes per block), a build's own types included
``split``      a model as llama.cpp loads it: one file or every shard of a split set
``gguf_py``    a build's own gguf-py: its weight types and MTP architectures
``mtp_table``  what each architecture's loader requires of an MTP block, read from a llama.cpp tree
``mtp``        which tensors are MTP (multi-token prediction) tensors, and what an MTP block must hold
``inspect``    a summary of a model: metadata, every tensor, trunk and MTP totals
``audit``      does the model keep the MTP promise its metadata makes; does a draft fit its target?
``imatrix``    importance matrices in both formats (GGUF and legacy .dat), told apart by content
``writer``     write a GGUF or a split set atomically, streaming tensor data from memory-mapped inputs
``surgery``    extract the MTP layers into a donor file, graft them into a base file
"""
