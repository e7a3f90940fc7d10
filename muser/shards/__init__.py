"""The streaming data engine: dataset sources -> Track records, sharding into WebDataset tar files, the
manifest, the training/evaluation reader and metadata-to-text rendering."""
