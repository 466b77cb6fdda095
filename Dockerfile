# fnplane serving the examples in functions/ (see compose.yaml).
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY platform platform
COPY sources sources
RUN pip install --no-cache-dir .

COPY functions functions
ENV FNPLANE_HOST=0.0.0.0 \
    FNPLANE_STATE_DIR=/var/lib/fnplane \
    PYTHONUNBUFFERED=1
EXPOSE 8080
# Exec form: fnplane is PID 1 and gets SIGTERM itself (drain, hooks, exit 0).
CMD ["fnplane", "run"]
