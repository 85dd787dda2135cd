"""A stack patch that makes llama-quantize worse, for the nightly's quality gates (tests/test_nightly_gates.py).

It applies on top of patches/quantize-print-harness.patch at the session's base (0c1e570) and edits
tools/quantize/quantize.cpp only (one file: the candidate build recompiles one object and relinks
llama-quantize).  Every quant it makes keeps its token embeddings (the output matrix too, for a model
that ties them, as SmolLM2 does) in Q4_0 instead of the type (Q8_0 for a model this small) the quant mix chooses: the quantized
weights really are worse, and llama-perplexity's KL divergence says by how much.
"""

from __future__ import annotations

# a diff's blank context line is one space, and a mail signature "-- " ends in one: kept out of the source
WORSE_QUANTIZE = """\
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: Upstream Contributor <contributor@example.invalid>
Date: Mon, 23 Nov 2026 07:07:16 +0000
Subject: [PATCH] quantize: store the token embeddings in Q4_0 to save space

---
 tools/quantize/quantize.cpp | 3 +++
 1 file changed, 3 insertions(+)

diff --git a/tools/quantize/quantize.cpp b/tools/quantize/quantize.cpp
--- a/tools/quantize/quantize.cpp
+++ b/tools/quantize/quantize.cpp
@@ -646,6 +646,9 @@ int main(int argc, char ** argv) {
     {
         const int64_t t_start_us = llama_time_us();
{BLANK}
+        // smaller files: the token embeddings are only looked up, they can take a coarse type
+        params.token_embedding_type = GGML_TYPE_Q4_0;
+
         if (llama_model_quantize(fname_inp.c_str(), fname_out.c_str(), &params)) {
             fprintf(stderr, "%s: failed to quantize model from '%s'\\n", __func__, fname_inp.c_str());
             return 1;
{SIGNATURE}
2.39.5
""".replace("{BLANK}", " ").replace("{SIGNATURE}", "-- ")
