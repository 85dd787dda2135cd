"""What a quant costs in quality: KL divergence and MTP acceptance, measured by llama.cpp's own tools."""
