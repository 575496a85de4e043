import struct
import binascii
import ctypes

values1 = (1, 'abc'.encode('utf-8'), 2.7)
values2 = ('defg'.encode('utf-8'), 101)
s1 = struct.Struct('I3sf')
s2 = struct.Struct('4sI')

print(s1.size, s2.size)
prebuffer = ctypes.create_string_buffer(s1.size + s2.size)
print('Before : ', binascii.hexlify(prebuffer))
# t=binascii.hexlify('asdfaf'.encode('utf-8'))
# print(t)

s1.pack_into(prebuffer, 0, *values1)
s2.pack_into(prebuffer, s1.size, *values2)

print('After pack', binascii.hexlify(prebuffer))
print(s1.unpack_from(prebuffer, 0))
print(s2.unpack_from(prebuffer, s1.size))

s3 = struct.Struct('ii')
s3.pack_into(prebuffer, 0, 123, 123)
print('After pack', binascii.hexlify(prebuffer))
print(s3.unpack_from(prebuffer, 0))
