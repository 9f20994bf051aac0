"""Reading users' files for `adagrad fit` / `adagrad predict`: the formats (svmlight, TSV,
CSV), streamed in chunks, and the hashing of text into sparse features."""
