"""violet: video-language pretraining and fine-tuning (VIOLET / SimVTP family) on Accelerate + DeepSpeed."""
