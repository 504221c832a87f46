# HuggingFace Docker Space (or any container host): the app with NiiVue served from node_modules.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
RUN useradd -m -u 1000 user
WORKDIR /home/user/app
COPY --chown=user requirements.txt requirements-deepisles.txt package.json package-lock.json ./
# torch 2.13.0 (the pinned version) from the PyTorch index: TORCH_INDEX=.../whl/cu128 on a GPU host; DEEPISLES=1 adds
# the optional DeepISLES extra (its weights are downloaded on first use, or mount them and set
# STROKE_SEG_DEEPISLES_WEIGHTS). Then the rest from PyPI.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG DEEPISLES=0
RUN pip install --no-cache-dir torch==2.13.0 --index-url "$TORCH_INDEX" \
 && pip install --no-cache-dir -r requirements.txt \
 && if [ "$DEEPISLES" = "1" ]; then pip install --no-cache-dir -r requirements-deepisles.txt; fi \
 && npm ci --no-audit --no-fund
COPY --chown=user . .
USER user
# Only /tmp is writable on a Space: the result cache lives there (STROKE_SEG_CACHE_DIR to change).
ENV GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860 GRADIO_HEARTBEAT_INTERVAL=1
EXPOSE 7860
CMD ["python", "app.py"]
