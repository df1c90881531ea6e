"""encodec_hf in the Hugging Face ecosystem: datasets, the Hub, Auto classes, Inference Endpoints, ONNX."""
