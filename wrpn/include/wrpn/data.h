#pragma once
/// wrpn::data: datasets for LibTorch's data loader (digits, Fashion-MNIST, MNIST, CIFAR-10, image
/// folders), their seeded augmentations and the JPEG/PNG codecs.

#include <wrpn/data/common.h>
#include <wrpn/data/dataset.h>
#include <wrpn/data/idx.h>
#include <wrpn/data/image.h>
#include <wrpn/data/image_folder.h>
#include <wrpn/data/in_memory.h>
#include <wrpn/data/text.h>
#include <wrpn/data/transforms.h>
