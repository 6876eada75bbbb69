"""Triton Python model ``rtmo_preprocess`` (``PREPROCESS=gpu``): encoded images → letterboxed UINT8 input
on this instance's device (handed on by DLPack) + affine; JPEGs decoded there in one batch."""
import triton_python_backend_utils as pb_utils

from ...spec import AFFINE, ENGINE_INPUT, ENSEMBLE_INPUT, HOST_DECODES_METRIC, Param
from ..params import instance_device, read_parameters
from ..respond import respond_each
from ..tensor_exchange import check_tensor_exchange
from ..torch_import import import_torch


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        check_tensor_exchange(pb_utils)
        torch = import_torch()
        from ..gpu.jpeg_decoders import jpeg_decoder
        from ..gpu.preprocess import GpuPreprocess

        params = read_parameters(args["model_config"])
        device = torch.device(instance_device(args))
        decoder, how = jpeg_decoder(params[Param.JPEG_DECODER], device)
        self.stage = GpuPreprocess(input_size=int(params[Param.INPUT_SIZE]),
                                   max_pixels=int(params[Param.MAX_PIXELS]), device=device, decoder=decoder)
        pb_utils.Logger.log_info(f"{args['model_name']}: on {device}, {how}")
        # the family must outlive its metric: Triton refuses to count on a metric whose family is gone
        self.metric_family = pb_utils.MetricFamily(
            name=HOST_DECODES_METRIC, kind=pb_utils.MetricFamily.COUNTER,
            description="images the preprocess decoded on the host CPU")
        self.host_decodes = self.metric_family.Metric(labels={"model": args["model_name"],
                                                              "version": args["model_version"]})

    def execute(self, requests: list) -> list:
        images: list = []
        for request in requests:
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, ENSEMBLE_INPUT)
                images.append(tensor.as_numpy().reshape(-1))
            except Exception as exc:  # noqa: BLE001 - answered below, for this request alone
                images.append(exc)
        readable = [i for i, rows in enumerate(images) if not isinstance(rows, Exception)]
        decoded_before = self.stage.cpu_decodes
        for i, result in zip(readable, self.stage.run([images[i].tolist() for i in readable])):
            images[i] = result  # each request's slot: its unreadable input's error, or its result
        self.host_decodes.increment(self.stage.cpu_decodes - decoded_before)
        return respond_each(images, self._tensors, pb_utils)

    @staticmethod
    def _tensors(result) -> list:
        """One request's outputs, or its error raised for ``respond_each`` to answer."""
        if isinstance(result, Exception):
            raise result
        if result.error is not None:
            raise result.error
        return [pb_utils.Tensor.from_dlpack(ENGINE_INPUT, result.inputs),
                pb_utils.Tensor(AFFINE, result.affines)]
