"""InceptionV4 in keras-hub form: `inception_v4_backbone.InceptionV4Backbone`, its image converter,
presets and converters from the timm and TF-slim checkpoints."""
