"""A trained checkpoint put to use on your own images: a faiss index of a catalogue (build, add, query, kNN
classification with a calibrated "unknown" threshold) and ONNX export of the embedding network.

- catalogue.py: the images of a folder, a CSV list or one file, with labels where known;
- embedding.py: a checkpoint's network and evaluation pipeline, embedding images batch by batch;
- index_store.py: the index folder (faiss index, items, metadata.json), written atomically;
- querying.py: building, growing and querying an index, results as CSV, JSON and a picture;
- knn.py: kNN classification and the choice of its threshold;
- onnx_export.py: ONNX export and its onnxruntime parity check.
The command lines are Search_Index.py and Export_ONNX.py; the reference is docs/search.md.
"""
