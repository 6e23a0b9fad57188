"""FastAPI multipart upload: the size and md5 of what the endpoint received."""

import hashlib

from fastapi import FastAPI, Form, UploadFile

app = FastAPI()


@app.post("/upload")
async def upload(file: UploadFile, label: str = Form()):
    digest, size = hashlib.md5(), 0
    while chunk := await file.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return {"filename": file.filename, "label": label, "size": size, "md5": digest.hexdigest()}
