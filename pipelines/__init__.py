"""Everything that needs torch: model architectures, weights and the tiled forward passes."""
