"""GGUF files on disk: read and validate them, find their MTP layers, audit and operate on them.

``reader``   open a GGUF with bounded reads and validate it before anything trusts it
``mtp``      which tensors are MTP (multi-token prediction) tensors, per architecture
``inspect``  a summary of a file: metadata, every tensor, trunk and MTP totals
``audit``    does the file keep the MTP promise its metadata makes?
``writer``   write a GGUF atomically, streaming tensor data from memory-mapped inputs
``surgery``  extract the MTP layers into a donor file, graft them into a base file
"""
