"""TFLite flatbuffers: read a full-int8 .tflite into plain data (``reader``) and write one (``writer``)."""
