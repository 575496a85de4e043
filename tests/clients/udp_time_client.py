from socket import *

ip_port = ('127.0.0.1', 8081)
buffer_size = 1024
encoding = 'utf-8'

udp_client = socket(AF_INET, SOCK_DGRAM)

while True:
    date_format = input('请输入时间格式:')

    udp_client.sendto(date_format.encode(encoding), ip_port)

    data, address = udp_client.recvfrom(buffer_size)
    time_data = data.decode(encoding)
    print(time_data)
