"""llama.cpp's RPC backend (ggml/src/ggml-rpc, tools/rpc), used as it is.

Each host runs llama.cpp's own ``rpc-server``; the head's llama-server takes ``--rpc
host:port,...`` and splits layers across its local devices and the remote ones.  This
package holds what the harness adds around it:

- ``build``: ``build.rpc: true`` -> ``GGML_RPC=ON`` and the rpc-server target, whose name
  and wire protocol version are read from the tree being built;
- ``protocol``: the client side of rpc-server's handshake (HELLO, device count and memory),
  to check an endpoint before llama-server connects to it;
- ``endpoints``: ``host:port[@stamp]`` parsing, and the check that an endpoint runs the
  same llama.cpp commit and stack as the head's build;
- ``process``: starting and stopping an rpc-server process group.
"""

DEFAULT_PORT = 50052  # rpc-server's own default (tools/rpc/rpc-server.cpp)
