# HuggingFace Docker Space (or any container host): the app with NiiVue served from node_modules.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
RUN useradd -m -u 1000 user
WORKDIR /home/user/app
COPY --chown=user requirements.txt requirements-deepisles.txt requirements-nnunet.txt package.json package-lock.json ./
# torch 2.13.0 (the pinned version) from the PyTorch index: TORCH_INDEX=.../whl/cu128 on a GPU host; DEEPISLES=1 adds
# the optional DeepISLES extra (its weights are downloaded on first use, or mount them and set
# STROKE_SEG_DEEPISLES_WEIGHTS). NNUNET=1 adds the nnU-Net extra (with --no-deps: it keeps this torch; mount the
# trained-model folders and set STROKE_SEG_NNUNET_MODELS). Then the rest from PyPI.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG DEEPISLES=0
ARG NNUNET=0
RUN pip install --no-cache-dir torch==2.13.0 --index-url "$TORCH_INDEX" \
 && pip install --no-cache-dir -r requirements.txt \
 && if [ "$DEEPISLES" = "1" ]; then pip install --no-cache-dir -r requirements-deepisles.txt; fi \
 && if [ "$NNUNET" = "1" ]; then pip install --no-cache-dir --no-deps -r requirements-nnunet.txt; fi \
 && npm ci --no-audit --no-fund
COPY --chown=user . .
USER user
# Only /tmp is writable on a Space: the result cache lives there (STROKE_SEG_CACHE_DIR to change).
ENV GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 GRADIO_HEARTBEAT_INTERVAL=1
EXPOSE 7860
CMD ["python", "app.py"]
